"""kill -9 of each kind of child under ``surge up`` (a gateway process, an app instance, a
worker, the queue server): restarted and answering again within 5 s, and every task the
gateway acknowledged (202) still reaches ``succeeded``."""

from __future__ import annotations

import os
import signal
import time

import pytest

from integration.examples_flow import submit, wait_succeeded
from integration.surge_up import EXAMPLES, REPO, SurgeUp, http, wait_for

RECOVERY_SECONDS = 5.0


def python_example_config(tmp_path):
    """The embedded default with two gateway processes and absolute example paths."""
    app_dir = EXAMPLES / "python-app"
    text = (REPO / "src" / "surge" / "config" / "default.toml").read_text()
    text = text.replace('[gateway]\n', '[gateway]\nprocesses = 2\n', 1)
    text = text.replace('[pools.web]\n', f'[pools.web]\ndirectory = "{app_dir}"\n', 1)
    text = text.replace('python_path = ["."]', f'python_path = ["{app_dir}"]')
    text = text.replace('root = "static"', f'root = "{app_dir / "static"}"')
    config = tmp_path / "surge.toml"
    config.write_text(text)
    return config


@pytest.fixture
def surge(tmp_path):
    up = SurgeUp(tmp_path, python_example_config(tmp_path)).start()
    try:
        up.wait_until_up(timeout=90)
        yield up
    finally:
        up.close()


def kill_and_wait(up: SurgeUp, name: str, answering) -> float:
    """SIGKILL the child ``name``; seconds until it runs again and ``answering()`` holds."""
    before = up.processes()[name]
    assert before["state"] == "running" and before["pid"], before
    up.remember_descendants()
    os.kill(before["pid"], signal.SIGKILL)
    killed_at = time.monotonic()

    def recovered() -> bool:
        now = up.processes()[name]
        return (now["restarts"] > before["restarts"] and now["state"] == "running"
                and now["pid"] != before["pid"] and answering())
    wait_for(f"{name} restarted and answering", recovered, 30, interval=0.05)
    elapsed = time.monotonic() - killed_at
    up.remember_descendants()
    return elapsed


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
