"""kill -9 of each kind of child under ``surge up`` (a gateway process, an app instance, a
worker, the queue server): restarted and answering again within 5 s, and every task the
gateway acknowledged (202) still reaches ``succeeded``."""

from __future__ import annotations

import signal
import time

import psutil
import pytest

from integration.examples_flow import (
    kill_and_wait,
    python_example_config,
    submit,
    wait_succeeded,
)
from integration.surge_up import SurgeUp, http, wait_for

RECOVERY_SECONDS = 5.0


@pytest.fixture
def surge(tmp_path):
    up = SurgeUp(tmp_path, python_example_config(tmp_path)).start()
    try:
        up.wait_until_up(timeout=90)
        yield up
    finally:
        up.close()


def test_kill_9_each_child_kind(surge):
    def page_answers() -> bool:
        return http("GET", f"{surge.gateway}/", timeout=2)[0] == 200

    def enqueue_answers() -> bool:
        try:
            accepted.append(submit(surge, {"width": 16, "height": 16, "seed": len(accepted)}))
        except AssertionError:  # not accepted (503): nothing was promised, try again
            return False
        return True

    accepted = [submit(surge, {"width": 32, "height": 32, "seed": n}) for n in range(5)]
    timings = {
        "gateway-1": kill_and_wait(surge, "gateway-1", page_answers),
        "web-1": kill_and_wait(surge, "web-1", page_answers),
    }
    accepted += [submit(surge, {"width": 32, "height": 32, "seed": n}) for n in range(5, 10)]
    timings["worker-images-1"] = kill_and_wait(surge, "worker-images-1", lambda: True)
    timings["queue"] = kill_and_wait(surge, "queue", enqueue_answers)
    for location in accepted:
        assert wait_succeeded(surge, location, timeout=60)["status"] == "succeeded"
    print(f"recovery seconds after kill -9: { {n: round(s, 2) for n, s in timings.items()} }")
    slow = {name: round(seconds, 2) for name, seconds in timings.items()
            if seconds > RECOVERY_SECONDS}
    assert not slow, f"recovered after more than {RECOVERY_SECONDS}s: {slow}"
    assert surge.terminate(timeout=60) == 0
    assert surge.survivors() == []


# Quick enough for a test, slow enough that a loaded 2-core machine is not taken for a hang.
FAST_LIVENESS = '\n[supervisor]\nliveness_interval = "0.5s"\nliveness_timeout = "4s"\n'


def test_hung_children_are_killed_and_restarted(tmp_path):
    """SIGSTOP (a hang, not a crash): the queue server stops answering its ping, a worker
    stops touching its heartbeat file; each is killed and restarted."""
    config = python_example_config(tmp_path)
    config.write_text(config.read_text() + FAST_LIVENESS)
    up = SurgeUp(tmp_path, config).start()
    try:
        up.wait_until_up(timeout=90)
        location = submit(up, {"width": 8, "height": 8, "seed": 1})
        heartbeat = up.data_dir / "run" / "worker-images-1.alive"
        wait_for("the worker's first heartbeat", heartbeat.exists, 30)
        for name in ("worker-images-1", "queue"):
            elapsed = kill_and_wait(up, name, lambda: True, signal.SIGSTOP)
            assert elapsed < 4 + 0.5 + RECOVERY_SECONDS, (name, elapsed)
        hang_gateway_serving_process(up, "gateway-1")
        assert '"event":"child_hung"' in up.log_path.read_text()
        assert wait_succeeded(up, location, timeout=60)["status"] == "succeeded"
        assert up.terminate(timeout=60) == 0
        assert up.survivors() == []
    finally:
        up.close()


def hang_gateway_serving_process(up: SurgeUp, name: str) -> None:
    """SIGSTOP the process that serves connections for gateway ``name`` (the forked child of
    the supervisor's gateway process): its siblings still answer the shared port, so only its
    heartbeat file can tell the supervisor it hung."""
    before = up.processes()[name]
    serving = psutil.Process(before["pid"]).children()
    assert serving, f"{name} has no serving process"
    up.remember_descendants()
    serving[0].suspend()
    hung_at = time.monotonic()

    def restarted() -> bool:
        now = up.processes()[name]
        return now["restarts"] > before["restarts"] and now["state"] == "running"
    wait_for(f"hung {name} restarted", restarted, 30, interval=0.05)
    assert time.monotonic() - hung_at < 4 + 0.5 + RECOVERY_SECONDS
    assert http("GET", f"{up.gateway}/health", timeout=2)[0] == 200
    up.remember_descendants()
