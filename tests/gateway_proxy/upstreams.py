"""Upstream servers the tests start on free ports: a Python one whose behaviour each test
controls (slowness, resets, health, concurrency counting), Starman with a PSGI app, and a
fake of the supervisor's admin API."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import orjson


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str],
                                                            list[tuple[str, str]]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    pairs = [tuple(line.split(":", 1)) for line in lines[1:] if line]
    raw = [(k.strip().lower(), v.strip()) for k, v in pairs]
    return method, target, dict(raw), raw


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str],
                     digest: hashlib._Hash) -> int:
    size = 0
    if headers.get("transfer-encoding") == "chunked":
        while True:
            length = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if length == 0:
                await reader.readuntil(b"\r\n")
                return size
            data = await reader.readexactly(length)
            digest.update(data)
            size += length
            await reader.readexactly(2)
    remaining = int(headers.get("content-length", "0"))
    while remaining:
        data = await reader.read(min(remaining, 65536))
        if not data:
            raise ConnectionError("body cut short")
        digest.update(data)
        size += len(data)
        remaining -= len(data)
    return size


class PythonUpstream:
    """Paths: /echo (request as JSON), /slow?delay=S, /reset (close without answering),
    /big?size=N (chunked download), /health (``health_status``). Counts connections and
    the highest number of requests it ever had in progress at once."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0
        self.requests = 0
        self.in_progress = 0
        self.max_in_progress = 0
        self.health_status = 200
        self.reset_everything = False  # close every connection at once without answering
        # Close a kept-alive connection at its next request without answering: an idle
        # connection timed out by the server just as the proxy reuses it.
        self.drop_reused = False
        self.writers: set[asyncio.StreamWriter] = set()
        self.seen: list[str] = []  # "METHOD target" of every request whose head arrived

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> PythonUpstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):
                writer.transport.abort()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection_id = self.connections
        self.writers.add(writer)
        carried = 0
        try:
            while True:
                try:
                    method, target, headers, raw = await _read_head(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                carried += 1
                self.seen.append(f"{method} {target}")
                if self.reset_everything or (self.drop_reused and carried > 1):
                    return
                # Health checks come on their own connections: count only proxied requests.
                counted = 0 if target.startswith("/health") else 1
                self.requests += counted
                self.in_progress += counted
                self.max_in_progress = max(self.max_in_progress, self.in_progress)
                try:
                    keep = await self._respond(method, target, headers, raw, reader, writer,
                                               connection_id)
                finally:
                    self.in_progress -= counted
                if not keep:
                    return
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _respond(self, method: str, target: str, headers: dict[str, str],
                       raw: list[tuple[str, str]], reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, connection_id: int) -> bool:
        path, _, query = target.partition("?")
        params = {k: v[0] for k, v in parse_qs(query).items()}
        digest = hashlib.sha256()
        body_size = await _read_body(reader, headers, digest)
        if path == "/reset":
            return False
        if path == "/cut":  # announces 200 kB, sends half, hangs up
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"c" * 100000)
            await writer.drain()
            return False
        if path == "/split":  # the head, a pause, then the body (Starman writes them apart)
            body = b"s" * int(params.get("size", "18"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            await writer.drain()
            await asyncio.sleep(float(params.get("pause", "0.3")))
            writer.write(body)
            await writer.drain()
            return True
        if path == "/slow":
            await asyncio.sleep(float(params.get("delay", "0.2")))
        if path == "/big":
            size = int(params["size"])
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                         b"Content-Type: application/octet-stream\r\n\r\n")
            block = b"x" * 65536
            sent = 0
            while sent < size:
                piece = block[: min(65536, size - sent)]
                writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                sent += len(piece)
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        status = self.health_status if path == "/health" else 200
        payload = orjson.dumps({
            "method": method, "target": target, "headers": raw, "connection": connection_id,
            "body_size": body_size, "body_sha256": digest.hexdigest(), "port": self.port,
        })
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nKeep-Alive: timeout=5\r\n"
            f"Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\n\r\n".encode() + payload
        )
        await writer.drain()
        return True


class AdminFake:
    """The supervisor's ``GET /v1/targets?wait=&version=`` long poll, in miniature."""

    def __init__(self) -> None:
        self.version = 1
        self.pools: dict[str, list[dict[str, str]]] = {}
        self.changed = asyncio.Event()
        self.writers: set[asyncio.StreamWriter] = set()
        self.polls = 0
        self.port = 0
        self.server: asyncio.Server | None = None

    def publish(self, pools: dict[str, list[dict[str, str]]]) -> None:
        self.pools = pools
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()

    async def start(self) -> AdminFake:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):
                writer.transport.abort()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            _, target, _, _ = await _read_head(reader)
            self.polls += 1
            params = {k: v[0] for k, v in parse_qs(target.partition("?")[2]).items()}
            if params.get("version") == str(self.version):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), float(params.get("wait", 0)))
            body = orjson.dumps({"version": self.version, "pools": self.pools})
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()


PSGI_APP = r"""
use strict;
use warnings;
use JSON::XS;
use Time::HiRes qw(sleep);
my $app = sub {
    my $env = shift;
    my $path = $env->{PATH_INFO};
    if ($path eq '/slow') {
        sleep(0.2);
    }
    if ($path eq '/big') {
        my ($size) = ($env->{QUERY_STRING} =~ /size=(\d+)/);
        return sub {
            my $respond = shift;
            my $writer = $respond->([200, ['Content-Type' => 'application/octet-stream']]);
            my $block = 'y' x 65536;
            my $sent = 0;
            while ($sent < $size) {
                my $n = $size - $sent < 65536 ? $size - $sent : 65536;
                $writer->write(substr($block, 0, $n));
                $sent += $n;
            }
            $writer->close;
        };
    }
    my $length = 0;
    my $input = $env->{'psgi.input'};
    while (my $read = $input->read(my $buffer, 65536)) { $length += $read; }
    my %headers = map { $_ => $env->{$_} } grep { /^HTTP_/ } keys %$env;
    my $body = encode_json({ method => $env->{REQUEST_METHOD}, pid => $$,
                             headers => \%headers, body_size => $length,
                             query => $env->{QUERY_STRING} // '' });
    return [200, ['Content-Type' => 'application/json', 'Content-Length' => length $body],
            [$body]];
};
$app;
"""


@contextlib.contextmanager
def starman(tmp_path: Path, workers: int = 2) -> Iterator[str]:
    """Starman serving PSGI_APP; yields its address. Fails (not skips) when missing."""
    assert shutil.which("starman"), "starman is not installed (apt-get install starman)"
    app = tmp_path / "app.psgi"
    app.write_text(PSGI_APP)
    port = free_port()
    process = subprocess.Popen(
        ["starman", "--workers", str(workers), "--listen", f"127.0.0.1:{port}", str(app)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "starman did not start in 15 s"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
