"""Run ``surge up`` as a real subprocess on free ports with a temporary data directory, and
watch every process it starts so a test can prove none is left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http(method: str, url: str, body: bytes | None = None, timeout: float = 5.0,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def wait_for(what: str, predicate: Callable[[], Any], timeout: float,
             interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except (OSError, ValueError, KeyError) as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: "
                         f"{last_error!r})")


class SurgeUp:
    """``surge up`` with ``--listen``, ``--admin``, ``--queue-listen`` on free ports."""

    def __init__(self, tmp_path: Path, config: Path | None, *, extra_args: tuple[str, ...] = ()):
        self.gateway_port = free_port()
        self.admin_port = free_port()
        self.queue_port = free_port()
        self.data_dir = tmp_path / "data"
        self.log_path = tmp_path / "surge-up.log"
        self.config = config
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self.seen_pids: dict[int, float] = {}  # pid → create_time of every descendant seen

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> SurgeUp:
        argv = [sys.executable, "-m", "surge.cli", "up",
                "--listen", f"127.0.0.1:{self.gateway_port}",
                "--admin", f"127.0.0.1:{self.admin_port}",
                "--queue-listen", f"127.0.0.1:{self.queue_port}",
                "--data-dir", str(self.data_dir), *self.extra_args]
        if self.config is not None:
            argv[4:4] = ["-c", str(self.config)]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                        cwd=self.log_path.parent)
        return self

    @property
    def token(self) -> str:
        """The admin token ``surge up`` made in its data directory at start."""
        return (self.data_dir / "admin.token").read_text().strip()

    def admin_call(self, method: str, path: str, document: object | None = None,
                   timeout: float = 5.0) -> tuple[int, Any]:
        """A call on the admin API as the CLI makes it: the token, and JSON for a POST."""
        headers = {"Authorization": f"Bearer {self.token}"}
        body = None
        if method == "POST":
            headers["Content-Type"] = "application/json"
            body = json.dumps(document if document is not None else {}).encode()
        status, _, answer = http(method, f"{self.admin}{path}", body, timeout=timeout,
                                 headers=headers)
        return status, json.loads(answer)

    def state(self) -> dict[str, Any]:
        status, document = self.admin_call("GET", "/v1/state")
        assert status == 200, document
        return dict(document)

    def processes(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.state()["processes"]}

    def remember_descendants(self) -> None:
        assert self.process is not None
        try:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self.seen_pids.setdefault(child.pid, child.create_time())
        except psutil.NoSuchProcess:
            pass

    def wait_until_up(self, timeout: float = 60.0) -> None:
        def gateway_answers() -> bool:
            self.check_alive()
            status, _, _ = http("GET", f"{self.gateway}/", timeout=2)
            return status == 200
        deadline = time.monotonic() + timeout
        wait_for("GET / through the gateway", gateway_answers, timeout, interval=0.25)
        # One gateway answering says nothing of its siblings: a test that kills or counts
        # children needs every one of them running, not still starting.
        wait_for("every child running", self.all_running,
                 max(1.0, deadline - time.monotonic()), interval=0.25)
        self.remember_descendants()

    def all_running(self) -> bool:
        self.check_alive()
        return all(p["state"] == "running" for p in self.state()["processes"])

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"surge up exited with {self.process.returncode}:\n"
                                 f"{self.log_tail()}")

    def survivors(self) -> list[psutil.Process]:
        alive = []
        for pid, created in self.seen_pids.items():
            try:
                process = psutil.Process(pid)
                if process.create_time() == created and process.status() != "zombie":
                    alive.append(process)
            except psutil.NoSuchProcess:
                continue
        return alive

    def terminate(self, timeout: float) -> int:
        assert self.process is not None
        self.remember_descendants()
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Teardown: stop surge up if still running and kill anything it left behind."""
        if self.process is not None and self.process.poll() is None:
            self.remember_descendants()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for survivor in self.survivors():
            try:
                os.kill(survivor.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if hasattr(self, "_log"):
            self._log.close()


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class RequestLoop:
    """Client threads that GET ``path`` over keep-alive connections, back to back (or
    ``pause`` seconds apart) until stopped: the load a test holds on a gateway while it
    changes something. Every answer is counted by status; every error (no answer) is kept,
    with the time it happened."""

    def __init__(self, port: int, path: str = "/", *, clients: int = 4) -> None:
        self.port = port
        self.path = path
        self.pause = 0.0
        self.statuses: Counter[int] = Counter()
        self.errors: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True)
                         for _ in range(clients)]

    def __enter__(self) -> RequestLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    def _client(self) -> None:
        connection = HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            try:
                connection.request("GET", self.path)
                response = connection.getresponse()
                response.read()
                with self._lock:
                    self.statuses[response.status] += 1
            except (OSError, HTTPException) as exc:
                with self._lock:
                    self.errors.append((round(time.time(), 3), repr(exc)))
                connection.close()
                connection = HTTPConnection("127.0.0.1", self.port, timeout=10)
            if self.pause:
                time.sleep(self.pause)
        connection.close()
