"""Real servers for the backend suite, each on a free loopback port, stopped on exit."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_listening(port: int, process: subprocess.Popen[bytes] | None, what: str,
                         timeout: float = 20.0) -> None:
    give_up_at = time.monotonic() + timeout
    while time.monotonic() < give_up_at:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def surge_queue_server(data_dir: Path) -> Iterator[str]:
    if importlib.util.find_spec("surge.queue.server.main") is None:
        pytest.skip("surge.queue.server.main is not written yet")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from surge.cli import main; main()", "queue", "serve",
         "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)],
    )
    try:
        wait_until_listening(port, process, "surge queue serve")
        _wait_for_ping(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def _wait_for_ping(port: int, timeout: float = 10.0) -> None:
    give_up_at = time.monotonic() + timeout
    while time.monotonic() < give_up_at:
        ping = f"http://127.0.0.1:{port}/_surge/ping"
        with contextlib.suppress(OSError), urllib.request.urlopen(ping, timeout=1):
            return
        time.sleep(0.05)


@contextlib.contextmanager
def redis_server(data_dir: Path) -> Iterator[str]:
    executable = shutil.which("redis-server")
    if executable is None:  # a missing dependency fails the suite, it never skips it
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(data_dir)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_until_listening(port, process, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)
