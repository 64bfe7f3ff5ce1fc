"""Connections to targets: one asyncio Protocol per connection, httptools for responses.

An ``UpstreamConnection`` carries one request at a time and is reused while the target
keeps it alive. Response bodies are handed over in pieces as they arrive; reading from
the target pauses while more than ``BODY_HIGH_WATER`` bytes wait for the client, so a
1 GiB download never sits in memory. Waits (for the head, for body data, for the target
to take our writes) end with ``UpstreamTimeout`` after the caller's timeout.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

import httptools

from surge.gateway.exchange import Headers
from surge.gateway.proxy.errors import (
    ProxyError,
    UpstreamBroken,
    UpstreamConnectError,
    UpstreamTimeout,
)

BODY_HIGH_WATER = 256 * 1024


class UpstreamConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self.closed = False
        self._begin_response(skip_body=False)
        self._busy = False  # a request is outstanding on this connection

    # --- the state of the current response ---------------------------------------------
    def _begin_response(self, *, skip_body: bool) -> None:
        self.status = 0
        self.headers: Headers = []
        self.head_done = False
        self.complete = False
        self.keep_alive = True
        self.received_any = False
        self.error: ProxyError | None = None
        self._skip_body = skip_body  # a HEAD response: headers announce a body never sent
        self._informational = False
        self._until_close = False  # neither Content-Length nor chunked: body ends at EOF
        self._body: list[bytes] = []
        self._body_size = 0
        self._reading_paused = False
        self._replace_parser = False

    # --- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            # A response nobody asked for: the connection is out of step, drop it.
            self.close()
            return
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = UpstreamBroken(f"invalid response from the target: {exc}")
            self.close()
        if self._replace_parser:
            # The parser still expects the body a HEAD response announced; start afresh.
            self._parser = httptools.HttpResponseParser(self)
            self._replace_parser = False
        self._wake()

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._busy and not self.complete and self.error is None:
            if self.head_done and self._until_close:
                self.complete = True
                self.keep_alive = False
            else:
                self.error = UpstreamBroken(
                    "the target closed the connection"
                    + (" before responding" if not self.received_any else " mid-response"),
                    nothing_received=not self.received_any,
                )
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    # --- httptools callbacks ----------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # 100 Continue and friends: not the response; llhttp completes them on its own.
            self._informational = True
            self.headers = []
            return
        self.status = status
        self.head_done = True
        self.keep_alive = self._parser.should_keep_alive()
        if self._skip_body or status in (204, 304):
            self.complete = True
            self._replace_parser = self._skip_body
            return
        names = {name for name, _ in self.headers}
        if b"content-length" not in names and b"transfer-encoding" not in names:
            self._until_close = True
            self.keep_alive = False

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._body_size += len(body)
        if self._body_size > BODY_HIGH_WATER and not self._reading_paused and self._transport:
            self._reading_paused = True
            self._transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.complete = True

    # --- what the request cycle calls -------------------------------------------------
    def begin(self, *, skip_body: bool) -> None:
        """Prepare for the next request on this connection."""
        self._begin_response(skip_body=skip_body)
        self._busy = True

    def write(self, data: bytes) -> None:
        if self.closed or self._transport is None or self._transport.is_closing():
            raise self.error or UpstreamBroken(
                "the target closed the connection", nothing_received=not self.received_any
            )
        self._transport.write(data)

    async def drain(self, timeout: float) -> None:
        while self._write_paused and not self.closed:
            await self._wait(timeout, "accepting the request body")
        if self.closed and not self.complete:
            self._raise_closed()

    async def read_head(self, timeout: float) -> None:
        while not self.head_done:
            if self.error is not None:
                raise self.error
            if self.closed:
                self._raise_closed()
            await self._wait(timeout, "responding")
        if self.error is not None:
            raise self.error

    async def read_body(self, timeout: float) -> bytes:
        """The next piece of the body, b"" at its end."""
        while True:
            if self._body:
                data = self._body[0] if len(self._body) == 1 else b"".join(self._body)
                self._body.clear()
                self._body_size = 0
                if self._reading_paused and self._transport is not None:
                    self._reading_paused = False
                    self._transport.resume_reading()
                return data
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            if self.closed:
                self._raise_closed()
            await self._wait(timeout, "sending the response body")

    def finish(self) -> bool:
        """End of the request cycle; True when the connection may carry another request."""
        self._busy = False
        return (self.complete and self.keep_alive and self.error is None and not self.closed
                and not self._body)

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    # --- waiting --------------------------------------------------------------------
    async def _wait(self, timeout: float, what: str) -> None:
        # One future and one timer per wait: cheaper than asyncio.wait_for on the hot path.
        waiter = self._loop.create_future()
        self._waiter = waiter
        timer = self._loop.call_later(timeout, _expire, waiter, what, timeout)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _raise_closed(self) -> None:
        raise self.error or UpstreamBroken(
            "the target closed the connection", nothing_received=not self.received_any
        )


def _expire(waiter: asyncio.Future[None], what: str, timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout(f"the target took longer than {timeout:g}s {what}"))


async def open_connection(host: str, port: int, timeout: float) -> UpstreamConnection:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            _, protocol = await loop.create_connection(UpstreamConnection, host, port)
    except TimeoutError as exc:
        raise UpstreamConnectError(f"connect to {host}:{port} timed out after {timeout:g}s") \
            from exc
    except OSError as exc:
        raise UpstreamConnectError(f"connect to {host}:{port} failed: {exc.strerror or exc}") \
            from exc
    return protocol


class ConnectionPool:
    """Keep-alive connections to one target. The most recently used idle connection is
    reused first: it is the least likely to have been closed by the target meanwhile."""

    def __init__(self, host: str, port: int, *, max_idle: int, connect_timeout: float) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self.idle: deque[UpstreamConnection] = deque()
        self.in_use: set[UpstreamConnection] = set()
        self.opened = 0
        self.reused = 0

    async def get(self) -> tuple[UpstreamConnection, bool]:
        """A connection and whether it was reused."""
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                self.in_use.add(connection)
                self.reused += 1
                return connection, True
        connection = await open_connection(self.host, self.port, self.connect_timeout)
        self.opened += 1
        self.in_use.add(connection)
        return connection, False

    def put(self, connection: UpstreamConnection) -> None:
        """Return a connection after its request: kept if reusable and room is left."""
        self.in_use.discard(connection)
        if connection.finish() and len(self.idle) < self.max_idle:
            self.idle.append(connection)
        else:
            connection.close()

    def close_idle(self) -> None:
        while self.idle:
            self.idle.pop().close()

    def abort_all(self) -> None:
        self.close_idle()
        for connection in list(self.in_use):
            connection.abort()


async def fetch(
    host: str, port: int, path: str, *, timeout: float, host_header: str | None = None
) -> tuple[int, bytes]:
    """One GET on a fresh connection (health checks, the targets feed): status and body."""
    async with asyncio.timeout(timeout):
        connection = await open_connection(host, port, timeout)
        try:
            connection.begin(skip_body=False)
            connection.write(
                f"GET {path} HTTP/1.1\r\nHost: {host_header or f'{host}:{port}'}\r\n"
                "User-Agent: surge-gateway\r\nConnection: close\r\n\r\n".encode("latin-1")
            )
            await connection.read_head(timeout)
            pieces = []
            while piece := await connection.read_body(timeout):
                pieces.append(piece)
            return connection.status, b"".join(pieces)
        finally:
            connection.close()
