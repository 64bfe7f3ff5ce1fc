"""A small, fast HTTP/1.1 server for full-body request/response services.

Used by the queue server, the admin API and test backends: the whole request body is read
(up to ``max_body_size``, else 413) before the handler runs, and the handler returns the
whole response. One ``asyncio.Protocol`` per connection feeds httptools; keep-alive and
pipelining are supported, and pipelined responses go out in request order even when a later
handler finishes first. Each handler runs as its own task, so a slow one (a long poll) never
holds up other connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

import httptools

from surge.httpkit.acceptor import Acceptor, listening_socket

log = logging.getLogger(__name__)

# Pipelined requests beyond this are not parsed until earlier ones are answered, so a client
# that pipelines without reading cannot make us hold unbounded work.
MAX_PIPELINED = 64


@dataclass(slots=True)
class SimpleRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes
    client: tuple[str, int]


@dataclass(slots=True)
class SimpleResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


SimpleHandler = Callable[[SimpleRequest], Awaitable[SimpleResponse]]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def encode_response(response: SimpleResponse, *, keep_alive: bool) -> bytes:
    """The bytes of one response (status line, headers, body)."""
    lines = [
        f"HTTP/1.1 {response.status} {_reason(response.status)}",
        f"content-type: {response.content_type}",
        f"content-length: {len(response.body)}",
    ]
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    if not keep_alive:
        lines.append("connection: close")
    head = "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n"
    return head + response.body


class _PendingResponse:
    """One request's place in the connection's response order."""

    __slots__ = ("data", "keep_alive")

    def __init__(self, keep_alive: bool) -> None:
        self.data: bytes | None = None
        self.keep_alive = keep_alive


class SimpleHttpProtocol(asyncio.Protocol):
    """One client connection: parse with httptools, run handlers, answer in order."""

    def __init__(self, handler: SimpleHandler, max_body_size: int,
                 connections: set[SimpleHttpProtocol]) -> None:
        self._handler = handler
        self._max_body_size = max_body_size
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client: tuple[str, int] = ("", 0)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._pending: deque[_PendingResponse] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reading_paused = False
        self._closing = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._client = (str(peer[0]), int(peer[1]))
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._closing = True
        for task in self._tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"upgrade not supported")
        except httptools.HttpParserError:
            if not self._closing:
                self._fail(400, b"bad request")

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body_size:
            self._fail(413, b"request body too large")
            raise httptools.HttpParserError("body too large")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._max_body_size:
            self._fail(413, b"request body too large")
            raise httptools.HttpParserError("body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self._parser.get_method().decode("ascii")
        parsed = httptools.parse_url(self._url)
        request = SimpleRequest(
            method=method,
            path=(parsed.path or b"/").decode("latin-1"),
            query=(parsed.query or b"").decode("latin-1"),
            headers=self._headers,
            body=b"".join(self._body),
            client=self._client,
        )
        pending = _PendingResponse(self._parser.should_keep_alive())
        self._pending.append(pending)
        task = asyncio.get_running_loop().create_task(self._run(request, pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if len(self._pending) >= MAX_PIPELINED and self._transport and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    # -- responses --------------------------------------------------------------------------

    async def _run(self, request: SimpleRequest, pending: _PendingResponse) -> None:
        try:
            response = await self._handler(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.path)
            response = SimpleResponse(500, b"internal server error")
        pending.data = encode_response(response, keep_alive=pending.keep_alive)
        self._flush()

    def _flush(self) -> None:
        """Write every finished response at the head of the line, in request order."""
        transport = self._transport
        if transport is None or self._closing:
            return
        while self._pending and self._pending[0].data is not None:
            pending = self._pending.popleft()
            assert pending.data is not None
            transport.write(pending.data)
            if not pending.keep_alive:
                self._close()
                return
        if self._reading_paused and len(self._pending) < MAX_PIPELINED:
            self._reading_paused = False
            transport.resume_reading()

    def _fail(self, status: int, message: bytes) -> None:
        """Answer a request we could not parse or accept, then close (framing is lost)."""
        if self._transport is None or self._closing:
            return
        # Responses to earlier pipelined requests still in progress are abandoned: after a
        # framing error the connection cannot be trusted anyway.
        self._transport.write(encode_response(SimpleResponse(status, message), keep_alive=False))
        self._close()

    def _close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def shutdown(self) -> None:
        """Close once the responses already being worked on are sent (SIGTERM)."""
        if not self._pending:
            self._close()
        else:
            for pending in self._pending:
                pending.keep_alive = False


class SimpleServer:
    """A listening socket served with ``SimpleHttpProtocol``; what ``start_simple_server``
    returns (``sockets`` and ``close`` as on ``asyncio.Server``)."""

    def __init__(self, sock: socket.socket, handler: SimpleHandler, max_body_size: int) -> None:
        self.sockets: tuple[socket.socket, ...] = (sock,)
        self.connections: set[SimpleHttpProtocol] = set()
        self._acceptor = Acceptor(
            sock, lambda: SimpleHttpProtocol(handler, max_body_size, self.connections))
        self._acceptor.start()

    def close(self) -> None:
        """Stop accepting (connections already accepted go on)."""
        self.sockets = ()
        self._acceptor.close()


async def start_simple_server(handler: SimpleHandler, host: str, port: int, *,
                              max_body_size: int = 2 * 1024 * 1024,
                              reuse_port: bool = False) -> SimpleServer:
    """Listen on ``host:port`` (0: a free port; see ``server.sockets``) and serve ``handler``.
    Every queued connection is accepted at once (``httpkit.acceptor``), not one per loop
    turn, so a burst of new clients is not left waiting in the backlog."""
    return SimpleServer(listening_socket(host, port, reuse_port=reuse_port), handler,
                        max_body_size)


async def shutdown_simple_server(server: SimpleServer, timeout: float = 10.0) -> None:
    """Stop accepting, let in-flight requests finish (up to ``timeout``), close connections."""
    server.close()
    connections = server.connections
    for connection in list(connections):
        connection.shutdown()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while connections and loop.time() < deadline:
        await asyncio.sleep(0.02)
    for connection in list(connections):
        connection._close()
    # Each closed transport reports connection_lost on a later turn of the loop.
    deadline = loop.time() + 0.1
    while connections and loop.time() < deadline:
        await asyncio.sleep(0.01)
