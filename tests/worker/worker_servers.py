"""Real processes for the worker tests: the embedded queue server and ``surge worker``, on
free loopback ports, always stopped."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _surge(*args: str) -> list[str]:
    return [sys.executable, "-c", "from surge.cli import main; main()", *args]


@contextlib.contextmanager
def queue_server(data_dir: Path, log_path: Path | None = None) -> Iterator[str]:
    """``surge queue serve`` on port 0; yields its ``host:port`` once it listens."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or data_dir / "queue-server.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            _surge("queue", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)),
            stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        yield _wait_for_listening(process, log_path)
    finally:
        stop_process(process)


def _wait_for_listening(process: subprocess.Popen[bytes], log_path: Path,
                        timeout: float = 20.0) -> str:
    give_up_at = time.monotonic() + timeout
    while time.monotonic() < give_up_at:
        if process.poll() is not None:
            raise RuntimeError(f"queue server exited with {process.returncode}: "
                               f"{log_path.read_text()[-2000:]}")
        for line in log_path.read_text().splitlines():
            address = _listening_address(line)
            if address:
                return address
        time.sleep(0.05)
    raise RuntimeError(f"queue server did not listen within {timeout}s")


def _listening_address(log_line: str) -> str | None:
    """The address from the server's JSON "listening" log line: its fields at the top level,
    or (older form) a JSON document inside ``message``."""
    with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
        entry = json.loads(log_line)
        if entry.get("message") == "listening" and entry.get("address"):
            return str(entry["address"])
        nested = json.loads(entry["message"])
        if nested.get("event") == "listening":
            return str(nested["address"])
    return None


def stop_process(process: subprocess.Popen[Any], timeout: float = 15.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def write_worker_config(path: Path, queue_address: str, data_dir: Path, handlers: str,
                        worker_options: str = "", queue_options: str = "") -> Path:
    """A surge.toml with one queue ``jobs`` and one worker group ``jobs``."""
    path.write_text(f"""
data_dir = "{data_dir}"

[queue_backend]
url = "embedded"
listen = "{queue_address}"

[queues.jobs]
{queue_options}

[workers.jobs]
queue = "jobs"
python_path = ["{Path(__file__).parent}"]
handlers = {handlers}
{worker_options}
""")
    return path


def start_worker(config: Path, log_path: Path, env: dict[str, str] | None = None
                 ) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            _surge("worker", "-c", str(config), "jobs"),
            stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
