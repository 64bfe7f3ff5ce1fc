"""The httpkit server against hostile clients: split writes, trickles, floods, oversize,
ambiguous framing. Timeouts are a fraction of a second here (``ServerLimits``)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

import pytest

from surge.httpkit import SimpleRequest, SimpleResponse
from surge.httpkit.server import ServerLimits, SimpleServer, start_simple_server

FAST = ServerLimits(max_head_size=1024, max_body_size=4096, header_timeout=0.4,
                    body_timeout=0.4, keepalive_timeout=0.4)
OK = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"


async def _echo(request: SimpleRequest) -> SimpleResponse:
    names = ",".join(name for name, _ in request.header_list)
    return SimpleResponse(200, f"{request.method} {request.path} {len(request.body)} "
                               f"{names}".encode())


async def _serve(limits: ServerLimits = FAST) -> tuple[SimpleServer, int]:
    server = await start_simple_server(_echo, "127.0.0.1", 0, limits=limits)
    return server, server.sockets[0].getsockname()[1]


def run(scenario: Callable[[SimpleServer, int], Awaitable[None]],
        limits: ServerLimits = FAST) -> None:
    async def main() -> None:
        server, port = await _serve(limits)
        try:
            await scenario(server, port)
        finally:
            server.close()
            server.stop_sweeping()
    asyncio.run(main())


async def read_all(reader: asyncio.StreamReader, timeout: float = 3.0) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)


def statuses(data: bytes) -> list[int]:
    """The status of every response in ``data`` (the echo bodies never say HTTP/1.1)."""
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


# -- timeouts ---------------------------------------------------------------------------------

async def trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
    """``data`` a byte every 20 ms: never idle for long."""
    for index in range(len(data)):
        writer.write(data[index:index + 1])
        await asyncio.sleep(0.02)


def test_a_trickled_head_gets_408_however_steady_the_trickle() -> None:
    async def scenario(server: SimpleServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        sending = asyncio.create_task(
            trickle(writer, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200))
        data = await read_all(reader)
        assert statuses(data) == [408]
        assert time.monotonic() - started < 1.0  # the 0.4 s header timeout, plus a sweep
        assert not sending.done(), "the 408 came only after the head was all sent"
        sending.cancel()
        writer.close()
    run(scenario)


def test_a_trickled_body_gets_408() -> None:
    async def scenario(server: SimpleServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()
        sending = asyncio.create_task(trickle(writer, b"x" * 1000))
        assert statuses(await read_all(reader)) == [408]
        assert time.monotonic() - started < 1.0
        assert not sending.done()
        sending.cancel()
        writer.close()
    run(scenario)


def test_idle_and_silent_connections_are_closed() -> None:
    async def scenario(server: SimpleServer, port: int) -> None:
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(OK)
        await asyncio.sleep(0)
        started = time.monotonic()
        data = await read_all(reader)  # the answer, then EOF once idle too long
        assert statuses(data) == [200]
        assert await read_all(silent_reader) == b""  # never sent a byte: closed, no 408
        assert 0.3 < time.monotonic() - started < 1.5
        writer.close()
        silent.close()
    run(scenario)


def test_a_long_handler_is_not_a_slow_client() -> None:
    async def slow(request: SimpleRequest) -> SimpleResponse:
        await asyncio.sleep(1.0)  # a long poll: longer than every timeout
        return SimpleResponse(200, b"done")

    async def main() -> None:
        server = await start_simple_server(slow, "127.0.0.1", 0, limits=FAST)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(OK)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert statuses(head) == [200]
        writer.close()
        server.close()
        server.stop_sweeping()
    asyncio.run(main())


# -- sizes ------------------------------------------------------------------------------------

def test_an_oversized_head_is_refused_before_it_is_all_read() -> None:
    async def scenario(server: SimpleServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        try:
            for _ in range(256):  # up to 1 MiB, one header line that never ends
                writer.write(b"a" * 4096)
                await writer.drain()
                sent += 4096
                await asyncio.sleep(0.001)
                if reader.at_eof() or len(reader._buffer):  # type: ignore[attr-defined]
                    break
        except ConnectionError:
            pass
        assert statuses(await read_all(reader)) == [431]
        assert sent < 64 * 1024, "the server kept reading a head far past its limit"
        writer.close()
    run(scenario)


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4097\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1001\r\n"
     + b"x" * 4097 + b"\r\n0\r\n\r\n", 413),
    (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
])
def test_size_limits(request_bytes: bytes, status: int) -> None:
    async def scenario(server: SimpleServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        assert statuses(await read_all(reader)) == [status]
        writer.close()
    run(scenario)


def test_split_writes_and_a_large_valid_head_behind_pipelined_requests() -> None:
    async def scenario(server: SimpleServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = b"POST /split HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        for byte in range(len(request)):  # one byte a write
            writer.write(request[byte:byte + 1])
            await writer.drain()
        # 60 small requests and, in the same write, the start of a head just under the
        # limit: together far over the head limit, each one under it.
        near_limit = b"GET /big HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 900 + b"\r\n\r\n"
        writer.write(OK * 60 + near_limit[:500])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(near_limit[500:] + b"GET /last HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\n\r\n")
        data = await read_all(reader)
        assert statuses(data) == [200] * 63
        assert data.count(b"GET /ok 0") == 60 and b"POST /split 5" in data
        writer.close()
    run(scenario)


# -- framing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("request_bytes", [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n",
])
def test_ambiguous_framing_is_refused(request_bytes: bytes) -> None:
    async def scenario(server: SimpleServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(OK + request_bytes + OK)  # answered in turn; nothing after is read
        data = await read_all(reader)
        assert statuses(data) == [200, 400]
        writer.close()
    run(scenario)


def test_trailer_fields_never_join_the_head() -> None:
    async def scenario(server: SimpleServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\nHost: evil\r\nX-Late: 1\r\n\r\n")
        data = await read_all(reader)
        assert statuses(data) == [200]
        assert data.endswith(b"POST /t 3 host,transfer-encoding,connection")
        writer.close()
    run(scenario)


# -- floods -----------------------------------------------------------------------------------

def test_a_flood_of_idle_connections_drains_and_service_goes_on() -> None:
    async def scenario(server: SimpleServer, port: int) -> None:
        flood = []
        for index in range(300):
            connection = await asyncio.open_connection("127.0.0.1", port)
            if index % 2 == 0:  # half a head, then nothing; the others send nothing at all
                connection[1].write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            flood.append(connection)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        assert statuses(await read_all(reader)) == [200]
        for index, (flood_reader, _) in enumerate(flood):
            data = await read_all(flood_reader, 2)  # a 408, or closed without a word
            assert statuses(data) == ([408] if index % 2 == 0 else []), index
        for _, flood_writer in flood:
            flood_writer.close()
        writer.close()
        deadline = time.monotonic() + 2
        while server.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not server.connections
    run(scenario)


def test_a_client_that_leaves_cancels_its_handler() -> None:
    """A long poll whose client closed must stop (and hand back what it took), not go on
    for a connection nobody reads."""
    async def main() -> None:
        cancelled = asyncio.Event()

        async def long_poll(request: SimpleRequest) -> SimpleResponse:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return SimpleResponse(200, b"too late")

        server = await start_simple_server(long_poll, "127.0.0.1", 0, limits=FAST)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(OK)
        await asyncio.sleep(0.1)
        writer.close()
        await asyncio.wait_for(cancelled.wait(), 2)
        server.close()
        server.stop_sweeping()
    asyncio.run(main())
