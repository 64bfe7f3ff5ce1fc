"""What both examples must do through the gateway: pages, echo, static files, and a task
that goes 202 → Location → ``succeeded`` with the handler's result."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from integration.surge_up import EXAMPLES, REPO, SurgeUp, http, wait_for


def expected_result(payload: dict[str, Any]) -> Any:
    """The Python handler's own answer (the Perl handler computes the same)."""
    spec = importlib.util.spec_from_file_location("example_tasks",
                                                  EXAMPLES / "python-app" / "tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.process_image(payload)


def submit(up: SurgeUp, payload: dict[str, Any]) -> str:
    """POST /images; the Location of the accepted (202) task."""
    status, headers, body = http("POST", f"{up.gateway}/images", json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    assert status == 202, (status, body)
    location = headers.get("Location") or headers.get("location")
    assert location and location.startswith("/tasks/"), headers
    return location


def wait_succeeded(up: SurgeUp, location: str, timeout: float = 30.0) -> dict[str, Any]:
    # The gateway records "queued" before its 202, so even the first poll — answered by any
    # gateway process — finds the task.
    def done() -> dict[str, Any] | None:
        status, _, body = http("GET", f"{up.gateway}{location}")
        assert status == 200, (status, body)
        record: dict[str, Any] = json.loads(body)
        assert record["status"] not in ("dead",), record
        return record if record["status"] == "succeeded" else None
    record: dict[str, Any] = wait_for(f"{location} to succeed", done, timeout, interval=0.2)
    return record


def check_pages(up: SurgeUp, title: str) -> None:
    status, _, body = http("GET", f"{up.gateway}/")
    assert status == 200 and title.encode() in body
    status, _, body = http("GET", f"{up.gateway}/echo", headers={"X-Probe": "yes"})
    assert status == 200
    echoed = json.loads(body)["headers"]
    assert echoed["x-probe"] == "yes"
    assert echoed.get("x-forwarded-for") == "127.0.0.1"
    assert echoed["host"] == f"127.0.0.1:{up.gateway_port}"
    status, _, body = http("GET", f"{up.gateway}/static/hello.txt")
    assert status == 200 and b"static route" in body


def check_task(up: SurgeUp) -> None:
    payload = {"width": 64, "height": 48, "seed": int(time.time()) % 1000}
    location = submit(up, payload)
    record = wait_succeeded(up, location)
    assert record["result"] == expected_result(payload)


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


def kill_and_wait(up: SurgeUp, name: str, answering: Callable[[], bool],
                  signum: int = signal.SIGKILL) -> float:
    """Signal the child ``name`` (kill -9, or SIGSTOP to hang it); seconds until it runs
    again as a new process and ``answering()`` holds."""
    before = up.processes()[name]
    assert before["state"] == "running" and before["pid"], before
    up.remember_descendants()
    os.kill(before["pid"], signum)
    killed_at = time.monotonic()

    def recovered() -> bool:
        now = up.processes()[name]
        return (now["restarts"] > before["restarts"] and now["state"] == "running"
                and now["pid"] != before["pid"] and answering())
    wait_for(f"{name} restarted and answering", recovered, 30, interval=0.05)
    elapsed = time.monotonic() - killed_at
    up.remember_descendants()
    return elapsed
