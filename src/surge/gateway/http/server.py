"""What the connections of one gateway process share: limits, routes, the connection cap,
the cached Date header, the access log, and the periodic deadline sweep.

The sweep replaces a timer per request: every ``Limits.sweep_interval`` it walks the
connections with a deadline and expires the overdue ones, and refreshes the Date header.
At 50,000 connections that is one pass of attribute reads per interval. Connections whose
client is not taking what we write are few and kept apart (``sending``), so their
``send_timeout`` costs the pass nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable

from surge.gateway.exchange import RouteHandler
from surge.gateway.http.accesslog import AccessLog, now_field
from surge.gateway.http.limits import Limits
from surge.gateway.http.protocol import Exchange, HttpConnection
from surge.gateway.http.responses import DateCache, simple_response
from surge.httpkit.acceptor import Acceptor

Router = Callable[[str, str], RouteHandler]

# Request heads answered without parsing (``HttpConnection.data_received``). Clients repeat
# the same few heads; the bound keeps a client that varies its headers from growing this.
MAX_REMEMBERED_HEALTH_HEADS = 64


class GatewayServer:
    def __init__(self, limits: Limits, router: Router, access_log: AccessLog) -> None:
        self.limits = limits
        self._router = router
        self.access_log = access_log
        self.health_fast_path = not access_log.wants("/health")
        self.connections: set[HttpConnection] = set()
        self.sending: set[HttpConnection] = set()
        self.rejected_connections = 0
        self.accepting = True
        self._date = DateCache()
        self.date_header = self._date.header
        self._health: dict[tuple[bool, bool], bytes] = {}
        self._health_heads: dict[bytes, bool] = {}  # request head -> head_only
        self.health_replies: dict[bytes, bytes] = {}  # request head -> its answer, this second
        self.server_port = 0
        self.trailer_fields_dropped = 0  # fields after chunked bodies (never forwarded)
        self._acceptor: Acceptor | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # ConnectionHost

    def route(self, method: str, path: str) -> RouteHandler:
        return self._router(method, path)

    def health_response(self, keep_alive: bool, head_only: bool) -> bytes:
        key = (keep_alive, head_only)
        response = self._health.get(key)
        if response is None:
            response = simple_response(200, b"OK", self.date_header, close=not keep_alive,
                                       head_only=head_only)
            self._health[key] = response
        return response

    def remember_health(self, chunk: bytes, head_only: bool) -> None:
        if len(self._health_heads) < MAX_REMEMBERED_HEALTH_HEADS:
            self._health_heads[chunk] = head_only
            self.health_replies[chunk] = self.health_response(True, head_only)

    def register(self, connection: HttpConnection) -> bool:
        if not self.accepting or len(self.connections) >= self.limits.max_connections:
            self.rejected_connections += 1
            return False
        self.connections.add(connection)
        return True

    def unregister(self, connection: HttpConnection) -> None:
        self.connections.discard(connection)

    def logs(self, path: str) -> bool:
        return self.access_log.wants(path)

    def log_access(self, exchange: Exchange, connection: HttpConnection) -> None:
        response = exchange.response
        fields: dict[str, object] = {
            "time": now_field(),
            "client": connection.client[0],
            "method": exchange.method,
            "path": exchange.path,
            "status": response.status,
            "bytes": response.body_bytes,
            "duration": round(time.monotonic() - exchange.started_at, 6),
        }
        fields.update(response.log_fields)
        self.access_log.record(fields)

    # lifecycle

    async def start(self, sock: socket.socket, backlog: int = 4096) -> None:
        self.server_port = sock.getsockname()[1]
        sock.listen(backlog)  # again: harmless on a listening socket, needed on a bound one
        self._acceptor = Acceptor(sock, lambda: HttpConnection(self))
        self._acceptor.start()
        self._sweeper = asyncio.ensure_future(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        interval = self.limits.sweep_interval
        while True:
            await asyncio.sleep(interval)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        if self._date.refresh():
            self.date_header = self._date.header
            self._health.clear()
            self.health_replies = {chunk: self.health_response(True, head_only)
                                   for chunk, head_only in self._health_heads.items()}
        overdue = [c for c in self.connections if 0.0 < c.deadline <= now]
        for connection in overdue:
            connection.expire(now)
        if self.sending:
            for connection in [c for c in self.sending if c.send_deadline <= now]:
                connection.send_expired(now)
        self.access_log.flush()

    async def shutdown(self, timeout: float) -> int:
        """Stop accepting, close idle connections, let in-flight requests finish for up to
        ``timeout`` seconds, then cut what is left. Returns how many were cut."""
        self.accepting = False
        if self._acceptor is not None:
            self._acceptor.close()
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            for connection in list(self.connections):
                connection.close_if_idle(now)
            if not self.connections or now >= deadline:
                break
            await asyncio.sleep(0.05)
        cut = len(self.connections)
        for connection in list(self.connections):
            connection.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self.access_log.close()
        return cut
