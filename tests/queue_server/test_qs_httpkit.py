"""The HTTP server kit against a real socket: keep-alive, pipelining order, limits, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from surge.httpkit import SimpleRequest, SimpleResponse, SimpleServer, start_simple_server

Runner = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Every test on both event loops: uvloop's transports are not asyncio's classes."""
    return asyncio.run if request.param == "asyncio" else uvloop.run


async def _handler(request: SimpleRequest) -> SimpleResponse:
    if request.path == "/slow":
        await asyncio.sleep(0.2)
    if request.path == "/boom":
        raise RuntimeError("boom")
    body = f"{request.method} {request.path} {request.query} {len(request.body)}".encode()
    return SimpleResponse(200, body, headers=[("x-test", request.headers.get("x-test", "-"))])


async def _serve(max_body_size: int = 1024) -> tuple[SimpleServer, int]:
    server = await start_simple_server(_handler, "127.0.0.1", 0, max_body_size=max_body_size)
    port = server.sockets[0].getsockname()[1]
    return server, port


async def _read_responses(reader: asyncio.StreamReader, count: int) -> list[tuple[int, bytes]]:
    responses = []
    for _ in range(count):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(x.split(":")[1]) for x in lines if x.lower().startswith("content-length"))
        responses.append((status, await reader.readexactly(length)))
    return responses


def test_keepalive_and_pipelining_in_order(run: Runner) -> None:
    async def main() -> None:
        server, port = await _serve()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /slow?a=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-Test: t\r\n\r\nabc")
        responses = await _read_responses(reader, 2)
        assert responses == [(200, b"GET /slow a=1 0"), (200, b"POST /fast  3")]
        writer.write(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await _read_responses(reader, 1) == [(200, b"GET /again  0")]
        writer.close()
        server.close()
    run(main())


def test_slow_handler_does_not_block_other_connections(run: Runner) -> None:
    async def main() -> None:
        server, port = await _serve()
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
        slow_writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await _read_responses(reader, 1)
        assert loop.time() - started < 0.15
        await _read_responses(slow_reader, 1)
        for w in (slow_writer, writer):
            w.close()
        server.close()
    run(main())


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + b"x" * 64,
         413),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n", 500),
    ],
)
def test_errors(run: Runner, request_bytes: bytes, status: int) -> None:
    async def main() -> None:
        server, port = await _serve(max_body_size=50)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        [(got, _)] = await _read_responses(reader, 1)
        assert got == status
        writer.close()
        server.close()
    run(main())


def test_http10_closes(run: Runner) -> None:
    async def main() -> None:
        server, port = await _serve()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /x HTTP/1.0\r\n\r\n")
        assert await _read_responses(reader, 1) == [(200, b"GET /x  0")]
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        server.close()
    run(main())
