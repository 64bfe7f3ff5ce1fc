"""Helpers for gateway tests: processes started on port 0, raw-socket HTTP, and a transport
in memory for driving ``HttpConnection`` without sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).parent
SURGE = str(Path(sys.executable).parent / "surge")


class MockTransport:
    """What ``HttpConnection`` needs of a transport, recording what it writes."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class Process:
    """A child process that prints ``{"event": "listening", "port": N}`` first."""

    def __init__(self, argv: list[str], cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      cwd=cwd, env={**os.environ, **(env or {})})
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"{argv} did not start: {self.popen.stderr.read().decode()}")  # type: ignore[union-attr]
        self.info: dict[str, Any] = json.loads(line)
        self.port: int = self.info["port"]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss(self) -> int:
        """Resident memory of the process and its children (bytes)."""
        proc = psutil.Process(self.pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])

    def terminate(self, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait()

    def stop(self) -> None:
        self.terminate()
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


def start_app_server(**limits: Any) -> Process:
    return Process([sys.executable, str(HERE / "app_server.py"), json.dumps(limits)])


def write_config(directory: Path, text: str) -> Path:
    path = directory / "surge.toml"
    path.write_text(text)
    return path


def start_gateway(config: Path, *extra: str) -> Process:
    return Process([SURGE, "gateway", "-c", str(config), *extra], cwd=config.parent)


def connect(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    return sock


def read_until_closed(sock: socket.socket, limit: float = 5.0) -> bytes:
    deadline = time.monotonic() + limit
    data = bytearray()
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


class Conn:
    """A client connection reading responses from a buffer (pipelined answers may share
    one recv)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = connect(port, host, timeout)
        self.buffer = b""

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the server; buffered {self.buffer[:200]!r}")
        self.buffer += chunk

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._more()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._more()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if head_only or status in (100, 204, 304):
            return status, headers, b""
        if "content-length" in headers:
            return status, headers, self._take(int(headers["content-length"]))
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self._line(), 16)
                body += self._take(size)
                self._take(2)
                if size == 0:
                    return status, headers, body
        return status, headers, self.rest()

    def rest(self, limit: float = 5.0) -> bytes:
        """Everything until the server closes."""
        data = self.buffer + read_until_closed(self.sock, limit)
        self.buffer = b""
        return data


def request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with Conn(port) as conn:
        conn.send(raw)
        return conn.response()


class QueueServer:
    """``surge queue serve`` on a free port (read from its ``listening`` log line)."""

    def __init__(self, data_dir: Path) -> None:
        self.popen = subprocess.Popen(
            [SURGE, "queue", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self.popen.stderr is not None
        self.address = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.popen.stderr.readline()
            if not line:
                raise RuntimeError("the queue server did not start")
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            message = entry.get("message", "")
            if isinstance(message, str) and message.startswith("{"):
                entry = {**entry, **json.loads(message)}
                message = entry.get("event", "")
            if message == "listening" and entry.get("address"):
                self.address = entry["address"]
                break
        if not self.address:
            raise RuntimeError("the queue server did not report its address")
        # Keep reading its log so a full pipe never stalls it.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        stream = self.popen.stderr
        try:
            while stream is not None and stream.readline():
                pass
        except (OSError, ValueError):
            pass

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}"

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        if self.popen.stderr is not None:
            self.popen.stderr.close()
