"""The /health replay (``HttpConnection.data_received``), without sockets: a byte-identical
head read at a message boundary is answered from the remembered decision, and anything
else (pipelined, partial, different, after close) still goes through the parser."""

from __future__ import annotations

import asyncio
import time

import pytest
from gateway_support import MockTransport

from surge.config.settings import AccessLogSettings
from surge.gateway.http import responses
from surge.gateway.http.accesslog import AccessLog
from surge.gateway.http.limits import Limits
from surge.gateway.http.protocol import HttpConnection
from surge.gateway.http.server import MAX_REMEMBERED_HEALTH_HEADS, GatewayServer
from surge.gateway.routes.router import Router

GET = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
HEAD = b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"


def connect(server: GatewayServer) -> tuple[HttpConnection, MockTransport]:
    connection = HttpConnection(server)
    transport = MockTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


@pytest.fixture
def server() -> GatewayServer:
    return GatewayServer(Limits(), Router([]), AccessLog(AccessLogSettings(enabled=False)))


def test_repeated_head_is_replayed_on_any_connection(server: GatewayServer) -> None:
    connection, transport = connect(server)
    connection.data_received(GET)
    # remembered: GET, keep-alive
    assert server.health_replies.get(GET) == server.health_response(True, False)
    fed = connection.parser.feed_data
    calls = 0

    def counting_feed(data: bytes) -> None:
        nonlocal calls
        calls += 1
        fed(data)

    connection.parser = type("P", (), {"feed_data": staticmethod(counting_feed)})()  # type: ignore[assignment]
    connection.data_received(GET)
    connection.data_received(GET)
    assert calls == 0
    assert transport.written == [server.health_response(True, False)] * 3
    other, other_transport = connect(server)
    other.data_received(HEAD)  # parsed, then remembered as head-only
    other.data_received(HEAD)
    assert server.health_replies.get(HEAD) == server.health_response(True, True)
    assert other_transport.written == [server.health_response(True, True)] * 2


@pytest.mark.parametrize("chunk", [
    GET + GET,  # pipelined: two answers, never one
    GET[:10],  # partial
    b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /health HTTP/1.0\r\n\r\n",
    b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
], ids=["pipelined", "partial", "close", "http10", "post"])
def test_only_one_whole_keepalive_bodiless_head_is_remembered(server: GatewayServer,
                                                             chunk: bytes) -> None:
    async def feed() -> None:
        connection, _ = connect(server)
        connection.data_received(chunk)
        await asyncio.sleep(0.01)  # let a request answered by a task finish

    asyncio.run(feed())
    assert server.health_replies.get(chunk) is None


def test_replay_needs_a_message_boundary(server: GatewayServer) -> None:
    asyncio.run(replay_needs_a_message_boundary(server))


async def replay_needs_a_message_boundary(server: GatewayServer) -> None:
    connection, transport = connect(server)
    connection.data_received(GET)
    transport.written.clear()
    connection.data_received(GET[:10])  # a head in progress: the next chunk is its rest
    connection.data_received(GET[10:])
    connection.data_received(GET)
    assert transport.written == [server.health_response(True, False)] * 2
    connection.data_received(b"GET /health HTTP/1.1\r\nHo")
    connection.data_received(GET)  # inside a head: parsed as its bytes, a bad header
    await asyncio.sleep(0.01)
    assert len(transport.written) == 3 and transport.written[-1].startswith(b"HTTP/1.1 400 ")


def test_the_memory_is_bounded(server: GatewayServer) -> None:
    for number in range(MAX_REMEMBERED_HEALTH_HEADS + 10):
        connection, _ = connect(server)
        connection.data_received(b"GET /health HTTP/1.1\r\nHost: x%d\r\n\r\n" % number)
    assert server.health_replies.get(b"GET /health HTTP/1.1\r\nHost: x70\r\n\r\n") is None
    assert server.health_replies.get(b"GET /health HTTP/1.1\r\nHost: x0\r\n\r\n") is not None


def test_a_replayed_answer_carries_the_current_date(server: GatewayServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    connection, transport = connect(server)
    connection.data_received(GET)
    connection.data_received(GET)  # replayed
    later = time.time() + 3600
    monkeypatch.setattr(responses.time, "time", lambda: later)
    server.sweep(0.0)  # a new second: the sweep rebuilds Date
    connection.data_received(GET)
    assert transport.written[1] == transport.written[0]
    assert transport.written[2] != transport.written[0]
    assert responses.http_date(later).encode() in transport.written[2]
