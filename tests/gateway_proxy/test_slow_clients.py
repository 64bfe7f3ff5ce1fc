"""Slow clients through the real gateway (`surge gateway`, one process) in front of a
target with two slots: trickling uploaders and clients that never read their response
must not take those slots from everyone else (issue 11, bugs 5 and 6)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from surge.gateway.spool import KEEP_IDLE

from .fakes import run_async
from .upstreams import PythonUpstream

BIG = 8 * 1024 * 1024  # a response far larger than every buffer on the way but the spool

CONFIG = """
data_dir = "{data}"
[gateway]
listen = "127.0.0.1:0"
processes = 1
body_timeout = "1s"
body_min_rate = 100
body_rate_grace = "1s"
send_timeout = "1s"
body_buffer_size = "16k"
response_buffer_size = "64k"
[gateway.access_log]
enabled = false
[pools.web]
targets = ["{target}"]
workers = 2
queue_timeout = "3s"
health_check = {{ path = "/health", interval = "30s" }}
[[routes]]
prefix = "/static/"
static = {{ root = "site" }}
[[routes]]
prefix = "/"
proxy = {{ pool = "web" }}
"""


@dataclass
class Gateway:
    port: int
    process: subprocess.Popen[bytes]
    temp_dir: Path

    def worker(self) -> psutil.Process:
        """The forked process that serves (``surge gateway`` supervises it)."""
        children = psutil.Process(self.process.pid).children()
        assert len(children) == 1, children
        return children[0]

    async def serving(self) -> None:
        """Wait until the forked process answers."""
        await until(lambda: psutil.Process(self.process.pid).children(), 10.0)
        assert (await fetch(self.port, "/health"))[0] == 200

    def clients(self) -> int:
        """Client connections the serving process holds."""
        return sum(1 for c in self.worker().net_connections("tcp")
                   if c.laddr and c.laddr.port == self.port and c.status == "ESTABLISHED")

    def temp_files(self) -> list[int]:
        """The sizes of the serving process's open files in the temp directory (they have
        no name); emptied ones are kept open for reuse, a few at most."""
        sizes = []
        fd_dir = f"/proc/{self.worker().pid}/fd"
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                if os.readlink(f"{fd_dir}/{fd}").startswith(str(self.temp_dir)):
                    sizes.append(os.stat(f"{fd_dir}/{fd}").st_size)
        assert not os.listdir(self.temp_dir)  # never a name
        return sizes

    def bodies_in_temp_files(self) -> int:
        return sum(1 for size in self.temp_files() if size)


def _start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "surge.cli", "gateway", "-c", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            cwd=config.parent)


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, PythonUpstream]]:
    app = await PythonUpstream().start()
    site = tmp_path / "site"
    site.mkdir()
    with (site / "big.bin").open("wb") as file:
        file.truncate(BIG)
    config = tmp_path / "surge.toml"
    config.write_text(CONFIG.format(data=tmp_path / "data", target=app.address))
    process = await asyncio.to_thread(_start, config)
    try:
        assert process.stdout is not None
        line = await asyncio.to_thread(process.stdout.readline)
        assert line, "the gateway did not start"
        front = Gateway(json.loads(line)["port"], process, tmp_path / "data" / "tmp")
        await front.serving()
        yield front, app
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 15)
        if process.stdout is not None:
            process.stdout.close()
        await app.stop()


async def fetch(port: int, path: str = "/echo", limit: float = 10.0) -> tuple[int, float, bytes]:
    """Status, seconds taken and body of one request on its own connection."""
    began = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(-1), limit)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), time.monotonic() - began, body


async def trickle(port: int, interval: float, limit: float) -> tuple[bytes, float]:
    """A chunked upload of one byte every ``interval``: what the gateway answers, and when."""
    began = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")

    async def drip() -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await asyncio.sleep(interval)
                writer.write(b"1\r\na\r\n")
                await writer.drain()

    dripping = asyncio.ensure_future(drip())
    try:
        answer = await asyncio.wait_for(reader.read(200), limit)
    except TimeoutError:
        answer = b""
    finally:
        dripping.cancel()
        writer.close()
    return answer, time.monotonic() - began


def non_reader(port: int, path: str) -> socket.socket:
    """A client that asks for ``path`` and then reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def read_rest(sock: socket.socket, limit: float = 10.0) -> tuple[int, bool]:
    """Bytes read until the connection ends or ``limit`` seconds pass, and whether the
    gateway reset it."""
    sock.settimeout(limit)
    size = 0
    try:
        while chunk := sock.recv(1 << 20):
            size += len(chunk)
    except ConnectionResetError:
        return size, True
    except TimeoutError:
        pass
    return size, False


async def until(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_trickling_uploads_hold_no_slot_and_get_408(tmp_path: Path) -> None:
    @run_async
    async def scenario() -> None:
        async with gateway(tmp_path) as (front, app):
            assert (await fetch(front.port))[0] == 200
            uploads = [asyncio.ensure_future(trickle(front.port, 0.25, 8.0)) for _ in range(5)]
            await asyncio.sleep(0.6)  # every uploader has sent its head and a byte or two
            for _ in range(3):  # two slots, five uploaders: a GET still goes straight through
                status, took, _ = await fetch(front.port)
                assert status == 200 and took < 2.0, (status, took)
            for answer, took in await asyncio.gather(*uploads):
                # The bound (docs/gateway-limits.md): 1 s of grace + a few bytes at
                # 100 bytes/s, checked every 0.25 s; a second more for a loaded machine.
                assert answer.startswith(b"HTTP/1.1 408 "), answer
                assert 0.95 < took < 2.3, took
            assert not [seen for seen in app.seen if "/upload" in seen]

    scenario()


def test_clients_that_never_read_lose_their_connection_not_a_slot(tmp_path: Path) -> None:
    @run_async
    async def scenario() -> None:
        async with gateway(tmp_path) as (front, app):
            began = time.monotonic()
            readers = [non_reader(front.port, f"/big?size={BIG}") for _ in range(3)]
            readers.append(non_reader(front.port, "/static/big.bin"))
            try:
                await until(lambda: app.in_progress == 0 and app.requests == 3, 5.0)
                # The responses wait in temporary files, and the target's slots are free.
                assert front.bodies_in_temp_files() == 3
                status, took, _ = await fetch(front.port)
                assert status == 200 and took < 2.0, (status, took)
                assert front.clients() == 4
                # send_timeout (1 s) after they stopped taking anything, they are cut
                await until(lambda: front.clients() == 0, 4.0)
                assert time.monotonic() - began > 0.9
                for sock in readers:
                    size, reset = read_rest(sock)
                    assert reset and size < BIG, (size, reset)
                await until(lambda: not front.bodies_in_temp_files(), 2.0)
                assert len(front.temp_files()) <= KEEP_IDLE
            finally:
                for sock in readers:
                    sock.close()

    scenario()


def test_large_upload_waits_in_a_temp_file_and_reaches_the_target_whole(
        tmp_path: Path) -> None:
    @run_async
    async def scenario() -> None:
        async with gateway(tmp_path) as (front, app):
            body = os.urandom(300 * 1024)
            reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
            writer.write(b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"%x\r\n%b\r\n" % (len(body) - 1, body[:-1]))
            await until(lambda: front.bodies_in_temp_files() == 1, 3.0)
            assert not [seen for seen in app.seen if seen.startswith("PUT")]
            writer.write(b"1\r\n%b\r\n0\r\n\r\n" % body[-1:])
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            seen = json.loads(await reader.readexactly(length))
            writer.close()
            assert seen["body_size"] == len(body)
            assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
            headers = dict(seen["headers"])
            assert headers["content-length"] == str(len(body))  # sent whole, not chunked
            assert "transfer-encoding" not in headers
            await until(lambda: not front.bodies_in_temp_files(), 2.0)
            assert len(front.temp_files()) <= KEEP_IDLE

    scenario()


def test_the_gateway_refuses_to_start_without_a_usable_temp_dir(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the data directory should be")
    config = tmp_path / "surge.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[gateway]\nlisten = "127.0.0.1:0"\n')
    done = subprocess.run([sys.executable, "-m", "surge.cli", "gateway", "-c", str(config)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and not done.stdout  # never said it was listening
    assert f"{tmp_path / 'data' / 'tmp'} (data_dir): Not a directory" in done.stderr
