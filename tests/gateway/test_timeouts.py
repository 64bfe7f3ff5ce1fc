"""The connection's deadlines without sockets: a body must come at a minimum rate however
steadily it trickles (408), and a client that stops taking its response is cut after
send_timeout, counted from the last write it took."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

import pytest

from surge.config.settings import AccessLogSettings
from surge.gateway.exchange import Request, ResponseWriter
from surge.gateway.http.accesslog import AccessLog
from surge.gateway.http.limits import Limits
from surge.gateway.http.protocol import HttpConnection
from surge.gateway.http.server import GatewayServer
from surge.gateway.routes.replies import send_text
from surge.gateway.routes.router import RouteEntry, Router

LIMITS = Limits(body_timeout=10.0, body_min_rate=100, body_rate_grace=2.0, send_timeout=5.0)


class FakeSocket:
    def __init__(self) -> None:
        self.options: dict[tuple[int, int], bytes] = {}

    def setsockopt(self, level: int, option: int, value: bytes) -> None:
        self.options[(level, option)] = value


class MockTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.buffered = 0  # bytes the client has not taken
        self.closing = False
        self.aborted = False
        self.socket = FakeSocket()

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "socket": self.socket}.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.aborted = self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Discard:
    async def handle(self, request: Request, response: ResponseWriter) -> None:
        size = sum([len(piece) async for piece in request.body])
        await send_text(response, 200, str(size))


def serve(limits: Limits = LIMITS) -> tuple[GatewayServer, HttpConnection, MockTransport]:
    server = GatewayServer(limits, Router([RouteEntry("/", frozenset(), Discard())]),
                           AccessLog(AccessLogSettings(enabled=False)))
    connection = HttpConnection(server)
    transport = MockTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    return server, connection, transport


def test_body_deadline_is_the_sooner_of_idle_time_and_the_minimum_rate() -> None:
    limits = Limits(body_timeout=60.0, body_min_rate=500, body_rate_grace=20.0)
    assert limits.body_deadline(100.0, 100.0, 0) == 120.0  # the grace
    assert limits.body_deadline(130.0, 100.0, 50_000) == 190.0  # idle: 60 s after a read
    assert limits.body_deadline(130.0, 100.0, 5_000) == 130.0  # 20 + 5,000 / 500 s
    # One byte every 3 s never catches up: each buys 2 ms.
    assert limits.body_deadline(160.0, 100.0, 20) == pytest.approx(120.04)
    assert Limits(body_min_rate=0).body_deadline(5.0, 0.0, 0) == 65.0  # no minimum rate


def test_sweep_interval_follows_the_new_timeouts_too() -> None:
    assert Limits(send_timeout=0.4).sweep_interval == pytest.approx(0.1)
    assert Limits(body_rate_grace=0.4).sweep_interval == pytest.approx(0.1)
    assert Limits(body_rate_grace=0.4, body_min_rate=0).sweep_interval == 1.0


def test_a_steady_trickle_gets_408_when_its_rate_runs_out() -> None:
    async def scenario() -> None:
        _, connection, transport = serve()
        connection.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                 b"\r\n")
        began = time.monotonic()
        await asyncio.sleep(0)  # the handler starts reading
        for _ in range(20):  # far more often than body_timeout: only the rate stops it
            connection.data_received(b"1\r\na\r\n")
        # 20 bytes buy 0.2 s at 100 bytes/s after the 2 s grace.
        assert began + 2.0 < connection.deadline <= time.monotonic() + 2.2
        connection.expire(connection.deadline + 0.01)
        await asyncio.sleep(0)  # the handler sees the error and answers it
        await asyncio.sleep(0)
        assert b"".join(transport.written).startswith(b"HTTP/1.1 408 ")

    asyncio.run(scenario())


def test_a_body_at_the_minimum_rate_keeps_going() -> None:
    async def scenario() -> None:
        _, connection, transport = serve()
        connection.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        await asyncio.sleep(0)
        connection.data_received(b"x" * 900)
        # 900 bytes bought 9 s past the grace: now only body_timeout (10 s) binds.
        assert connection.deadline == pytest.approx(time.monotonic() + 10.0, abs=0.1)
        connection.data_received(b"x" * 100)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert b"".join(transport.written).endswith(b"\r\n\r\n1000")

    asyncio.run(scenario())


def test_send_timeout_counts_from_the_last_write_the_client_took() -> None:
    server, connection, transport = serve()
    transport.buffered = 300_000
    connection.pause_writing()
    assert connection in server.sending
    deadline = connection.send_deadline
    assert deadline == pytest.approx(time.monotonic() + 5.0, abs=0.5)
    server.sweep(deadline - 0.1)
    assert not transport.aborted
    transport.buffered = 200_000  # the client took some: another send_timeout
    server.sweep(deadline + 0.1)
    assert not transport.aborted and connection.send_deadline == pytest.approx(deadline + 5.1)
    server.sweep(deadline + 5.2)  # nothing taken since
    assert transport.aborted
    assert transport.socket.options[(socket.SOL_SOCKET, socket.SO_LINGER)] == \
        struct.pack("ii", 1, 0)  # a reset: the kernel drops what it still holds for it
    assert connection not in server.sending
    connection.connection_lost(None)


def test_a_client_that_catches_up_is_not_timed_and_a_closing_one_is() -> None:
    server, connection, transport = serve()
    transport.buffered = 300_000
    connection.pause_writing()
    transport.buffered = 1_000
    connection.resume_writing()
    assert connection not in server.sending and connection.send_deadline == 0.0
    connection.close_if_idle(time.monotonic() + 10)  # closes; 1,000 bytes still to send
    assert transport.closing and connection in server.sending
    connection.resume_writing()  # below the low mark, but the rest must still go
    assert connection in server.sending
    server.sweep(connection.send_deadline + 0.1)
    assert transport.aborted
    connection.connection_lost(None)
    assert connection not in server.sending
