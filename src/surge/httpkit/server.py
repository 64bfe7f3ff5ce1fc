"""A small, fast HTTP/1.1 server for full-body request/response services.

Used by the queue server, the admin API and test backends: the whole request body is read
(up to ``max_body_size``, else 413) before the handler runs, and the handler returns the
whole response. One ``asyncio.Protocol`` per connection feeds httptools; keep-alive and
pipelining are supported, and pipelined responses go out in request order even when a later
handler finishes first. Each handler runs as its own task, so a slow one (a long poll) never
holds up other connections.

Every byte from a client is hostile, as at the gateway (``ServerLimits``): the head has a
size limit (431) and a deadline for the whole of it, the body a size limit (413) and a
deadline for the whole of it (a trickle cannot stretch either: 408), an idle keep-alive
connection is closed, and the framing rules are the gateway's own (``httpkit.framing``:
Content-Length with Transfer-Encoding, repeated lengths, a missing or repeated Host → 400).
Trailer fields are dropped, never merged into the head. A refused request is answered in
its turn, after the responses to the requests before it, and the connection then closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

import httptools

from surge.gateway.errors import BadRequest, BodyTooLarge, GatewayHttpError, HeadersTooLarge
from surge.httpkit.acceptor import Acceptor, listening_socket
from surge.httpkit.framing import decide_framing, header_problem, parser_refuses_bad_headers

log = logging.getLogger(__name__)

# Pipelined requests beyond this are not parsed until earlier ones are answered, so a client
# that pipelines without reading cannot make us hold unbounded work.
MAX_PIPELINED = 64
# Whether on_header must check each header itself (a lenient httptools build).
CHECK_HEADERS = not parser_refuses_bad_headers()
# After the last answer of a connection, what the client still sends is read and dropped
# for up to this long before the socket closes (nginx's lingering_timeout): closing with
# unread bytes would reset the connection and could destroy the answer before the client
# reads it. A client that neither stops sending nor reads is cut off then.
LINGER = 5.0


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one client may hold of a server: the gateway's kinds of limit (``gateway.http.
    limits``), with values for services whose clients are programs, not browsers.

    - ``max_head_size``: request line + headers. A SigV4-signed SQS request head is under
      1 KiB; a query-protocol GET carries its parameters in the target, so twice nginx's 8k
      line buffer leaves room for those, and larger parameters belong in a POST body (as
      SQS's documentation advises).
    - ``header_timeout`` / ``body_timeout``: for the *whole* head (from its first byte) and
      the *whole* body (from the end of the head), not between reads, so a client sending a
      byte a second runs out of time all the same. 60 s moves the largest body a server
      here accepts (a few MiB) over a 1 Mbit/s link.
    - ``keepalive_timeout``: nginx's and the gateway's 75 s, longer than the idle time of
      any pooled client connection surge makes (4 s) or botocore keeps.
    """

    max_head_size: int = 16 * 1024
    max_body_size: int = 2 * 1024 * 1024
    header_timeout: float = 20.0
    body_timeout: float = 60.0
    keepalive_timeout: float = 75.0

    @property
    def sweep_interval(self) -> float:
        """How often deadlines are checked: a quarter of the shortest timeout, within
        [50 ms, 1 s] (the gateway's rule), so one sweep replaces a timer per request."""
        shortest = min(self.header_timeout, self.body_timeout, self.keepalive_timeout)
        return max(0.05, min(1.0, shortest / 4))


@dataclass(slots=True)
class SimpleRequest:
    method: str
    path: str  # as sent (percent-escapes kept); an absolute-form target gives its path
    query: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes
    client: tuple[str, int]
    # Every header line in order (lower-case names, repeats kept): what a signature covers.
    header_list: list[tuple[str, str]] = field(default_factory=list)


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


class _StopReading(Exception):
    """Raised in a parser callback to stop parsing what follows the last request."""


class _Reading(enum.Enum):
    """Where the parser is in the client's byte stream: which deadline applies."""

    IDLE = "idle"  # between requests: the keep-alive timeout, once nothing is being answered
    HEAD = "head"  # the header timeout, from the request's first byte
    BODY = "body"  # the body timeout, from the end of the head
    DONE = "done"  # nothing more is parsed; what comes is dropped for up to LINGER


class _PendingResponse:
    """One request's place in the connection's response order."""

    __slots__ = ("data", "keep_alive")

    def __init__(self, keep_alive: bool, data: bytes | None = None) -> None:
        self.data = data
        self.keep_alive = keep_alive


class SimpleHttpProtocol(asyncio.Protocol):
    """One client connection: parse with httptools, run handlers, answer in order."""

    def __init__(self, handler: SimpleHandler, limits: ServerLimits,
                 connections: set[SimpleHttpProtocol]) -> None:
        self._handler = handler
        self._limits = limits
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client: tuple[str, int] = ("", 0)
        self._reading = _Reading.IDLE
        self.deadline = time.monotonic() + limits.header_timeout  # IDLE: closed silently
        self._url = b""
        self._header_lines: list[tuple[bytes, bytes]] = []
        self._head_size = 0  # request line and complete headers, as the callbacks saw them
        self._head_raw = 0  # bytes of reads that fell wholly inside the head
        self._began_in_feed = False
        self._error: GatewayHttpError | None = None
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
        if self._closing or self._reading is _Reading.DONE:
            return
        self._began_in_feed = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, b"protocol upgrades are not supported")
            return
        except httptools.HttpParserError:
            error = self._error
            if error is None and self._reading is _Reading.DONE:
                return  # stopped on purpose: the request before was the connection's last
            error = error or BadRequest("malformed request")
            self._refuse(error.http_status, str(error).encode())
            return
        if self._reading is _Reading.HEAD and not self._began_in_feed:
            # httptools holds a header line until it is complete, out of the callbacks'
            # sight: a read that began and ended inside one head counts whole. (Reads in
            # which the head began are left out: where it began in them is unknown, and
            # counting them whole could refuse a valid head behind pipelined requests.)
            self._head_raw += len(data)
            if self._head_raw > self._limits.max_head_size:
                too_large = HeadersTooLarge()
                self._refuse(too_large.http_status, str(too_large).encode())

    def eof_received(self) -> bool | None:
        # The client is gone (HTTP clients do not half-close and wait): close, which cancels
        # handlers still running for it, so a long poll hands back what it would have taken.
        return False

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._reading is _Reading.DONE:
            raise _StopReading  # bytes after the connection's last request: not parsed
        self._reading = _Reading.HEAD
        self._began_in_feed = True
        self.deadline = time.monotonic() + self._limits.header_timeout
        self._url = b""
        self._header_lines = []
        self._head_size = 0
        self._head_raw = 0
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._reading is not _Reading.HEAD:
            return  # a trailer field: dropped, never merged into the head
        self._grow_head(len(name) + len(value) + 4)
        if CHECK_HEADERS and self._error is None:
            self._error = header_problem(name, value)
        self._header_lines.append((name.lower(), value))

    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self._limits.max_head_size and self._error is None:
            self._error = HeadersTooLarge()

    def on_headers_complete(self) -> None:
        if self._error is None:
            try:
                framing = decide_framing(self._parser.get_http_version(), self._header_lines,
                                         self._limits.max_body_size)
            except GatewayHttpError as exc:
                self._error = exc
            else:
                if framing.expect_continue and framing.has_body and self._transport \
                        and not self._pending:
                    # (Behind pipelined requests still being answered, a 100 would come
                    # before their answers: the client then sends the body after its wait.)
                    self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self._error is not None:
            raise self._error  # stops the parser; data_received answers it
        self._reading = _Reading.BODY
        self.deadline = time.monotonic() + self._limits.body_timeout

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._limits.max_body_size:
            self._error = BodyTooLarge(
                f"body is over the limit of {self._limits.max_body_size} bytes")
            raise self._error
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._reading = _Reading.IDLE
        self.deadline = 0.0  # being answered: no deadline until the answer is out
        method = self._parser.get_method().decode("ascii", "replace")
        try:
            parsed = httptools.parse_url(self._url)
        except httptools.HttpParserInvalidURLError:
            self._error = BadRequest(f"invalid request target {self._url[:100]!r}")
            raise self._error from None
        header_list = [(name.decode("latin-1"), value.decode("latin-1"))
                       for name, value in self._header_lines]
        request = SimpleRequest(
            method=method,
            path=(parsed.path or b"/").decode("latin-1"),
            query=(parsed.query or b"").decode("latin-1"),
            headers=dict(header_list),
            body=b"".join(self._body),
            client=self._client,
            header_list=header_list,
        )
        pending = _PendingResponse(self._parser.should_keep_alive())
        self._pending.append(pending)
        task = asyncio.get_running_loop().create_task(self._run(request, pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not pending.keep_alive:
            self._reading = _Reading.DONE  # the client said this is its last request
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
                self._linger()
                return
        if self._reading_paused and len(self._pending) < MAX_PIPELINED:
            self._reading_paused = False
            transport.resume_reading()
        if not self._pending and self._reading is _Reading.IDLE:
            self.deadline = time.monotonic() + self._limits.keepalive_timeout

    def _refuse(self, status: int, message: bytes) -> None:
        """Answer a request we could not parse or accept, after the answers to the requests
        before it, then close: the framing of what follows is lost."""
        if self._transport is None or self._closing:
            return
        self._reading = _Reading.DONE
        self.deadline = time.monotonic() + LINGER
        answer = encode_response(SimpleResponse(status, message + b"\n"), keep_alive=False)
        self._pending.append(_PendingResponse(False, answer))
        if self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()  # nothing more is parsed anyway
        self._flush()

    def expire(self, now: float) -> None:
        """The sweep found ``deadline`` passed."""
        reading = self._reading
        if reading is _Reading.IDLE:
            self._close()  # idle keep-alive (or a connection that never sent a byte)
        elif reading is _Reading.DONE:
            self._abort()  # done, but the client neither closes nor stops sending
        elif not self._reading_paused:  # a paused socket is our backpressure, not theirs
            self._refuse(408, b"the request took too long to arrive")

    def _linger(self) -> None:
        """The last answer is written: send FIN after it, drop what the client still sends
        (``data_received`` ignores it once reading is DONE), close on its FIN or at the
        deadline."""
        transport = self._transport
        if transport is None or not transport.can_write_eof():
            self._close()
            return
        self._reading = _Reading.DONE
        self.deadline = time.monotonic() + LINGER
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        transport.write_eof()

    def _close(self) -> None:
        self._closing = True
        self.deadline = 0.0
        if self._transport is not None:
            self._transport.close()

    def _abort(self) -> None:
        self._closing = True
        self.deadline = 0.0
        if self._transport is not None:
            self._transport.abort()

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

    def __init__(self, sock: socket.socket, handler: SimpleHandler,
                 limits: ServerLimits) -> None:
        self.sockets: tuple[socket.socket, ...] = (sock,)
        self.limits = limits
        self.connections: set[SimpleHttpProtocol] = set()
        self._acceptor = Acceptor(
            sock, lambda: SimpleHttpProtocol(handler, limits, self.connections))
        self._acceptor.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Enforce every connection's deadline (one task, not a timer per request)."""
        while True:
            await asyncio.sleep(self.limits.sweep_interval)
            now = time.monotonic()
            for connection in list(self.connections):
                if 0.0 < connection.deadline <= now:
                    connection.expire(now)

    def close(self) -> None:
        """Stop accepting (connections already accepted go on, their deadlines too)."""
        self.sockets = ()
        self._acceptor.close()

    def stop_sweeping(self) -> None:
        self._sweeper.cancel()


async def start_simple_server(handler: SimpleHandler, host: str, port: int, *,
                              max_body_size: int = 2 * 1024 * 1024,
                              limits: ServerLimits | None = None,
                              reuse_port: bool = False) -> SimpleServer:
    """Listen on ``host:port`` (0: a free port; see ``server.sockets``) and serve ``handler``.
    Every queued connection is accepted at once (``httpkit.acceptor``), not one per loop
    turn, so a burst of new clients is not left waiting in the backlog. ``limits`` default
    to ``ServerLimits()`` with ``max_body_size``."""
    if limits is None:
        limits = ServerLimits(max_body_size=max_body_size)
    return SimpleServer(listening_socket(host, port, reuse_port=reuse_port), handler, limits)


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
    server.stop_sweeping()
    # Each closed transport reports connection_lost on a later turn of the loop.
    deadline = loop.time() + 0.1
    while connections and loop.time() < deadline:
        await asyncio.sleep(0.01)
    with contextlib.suppress(asyncio.CancelledError):
        await server._sweeper
