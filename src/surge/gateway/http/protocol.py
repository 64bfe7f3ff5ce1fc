"""One HTTP/1.1 connection: an ``asyncio.Protocol`` fed to an httptools request parser.

Requests are parsed as they arrive; each becomes an ``Exchange`` (request, body stream,
response stream, handler). Exchanges are answered one at a time in arrival order
(pipelining), and reading pauses while a later request waits, so a client that pipelines
without reading holds bounded memory. Deadlines are a field per connection checked by the
server's periodic sweep (``ConnectionHost.sweep``), not a timer per request: the head
must arrive within ``header_timeout``, a body at ``body_min_rate`` after a grace (and with
no gap over ``body_timeout``), and a response that the client stops taking is cut
``send_timeout`` after its last progress (connections whose writing is paused are in
``ConnectionHost.sending``, which the sweep checks).

Refused requests (bad framing → 400, head too large → 431, body too large → 413, slow
client → 408, HTTP version other than 1.0/1.1 → 505, CONNECT → 501) become an exchange
answered with the error in its turn, after which the connection closes; they never reach a
handler. Each request gets exactly one response, and its handler sees the request the
client sent: an absolute-form target is rewritten to origin-form with Host taken from it
(RFC 9112 §3.2.2), trailer fields are dropped (and counted), never merged into the head,
and an Upgrade, which the gateway does not support, is ignored as nginx does: the request
goes on with its whole body (``_AfterUpgrade``).

``/health`` without an access log is answered inside the parser callbacks, with no objects;
a chunk that repeats, at a message boundary, the exact bytes of such a request (remembered
by the server, a bounded few) is answered without parsing at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import struct
import time
from collections import deque
from typing import Protocol, cast
from urllib.parse import unquote

import httptools
from httptools.parser.url_parser import URL

from surge.gateway.errors import (
    BadRequest,
    BodyTooLarge,
    ClientDisconnected,
    GatewayHttpError,
    HeadersTooLarge,
    MethodNotImplemented,
    RequestTimeout,
    ServiceUnavailable,
    VersionNotSupported,
)
from surge.gateway.exchange import Request, RouteHandler
from surge.gateway.http.body import StreamingBody
from surge.gateway.http.limits import Limits
from surge.gateway.http.responses import CONTINUE_100, reason_phrase, simple_response
from surge.gateway.http.state import Event, Expiry, ReadState, expiry_for, next_state
from surge.gateway.http.writer import ResponseStream
from surge.httpkit.framing import (
    Framing,
    decide_framing,
    header_problem,
    parser_refuses_bad_headers,
)

log = logging.getLogger(__name__)

HEALTH_PATH = b"/health"
# A request target that is a path alone: no query, fragment or escapes to take apart.
_PLAIN_PATH = re.compile(rb"/[^?%#]*").fullmatch
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
# Whether on_header must check each header itself (a lenient httptools build).
CHECK_HEADERS = not parser_refuses_bad_headers()
# At shutdown, how long a just-accepted connection may take to send its first request.
FIRST_REQUEST_GRACE = 1.0
# SO_LINGER on, 0 s: closing the socket resets the connection and drops what it holds.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class ConnectionHost(Protocol):
    """What every connection of a process shares (implemented by ``GatewayServer``)."""

    limits: Limits
    date_header: bytes
    health_fast_path: bool
    server_port: int
    trailer_fields_dropped: int  # fields after a chunked body, never forwarded

    def route(self, method: str, path: str) -> RouteHandler: ...

    def health_response(self, keep_alive: bool, head_only: bool) -> bytes:
        """The whole ``/health`` answer, prebuilt (it changes once a second, with Date)."""
        ...

    # Request heads remembered by ``remember_health`` -> their whole keep-alive answer,
    # rebuilt with Date each second. A dict, not a method: read for every /health request.
    health_replies: dict[bytes, bytes]

    def remember_health(self, chunk: bytes, head_only: bool) -> None:
        """Remember ``chunk``: read from a message boundary, it was exactly one complete,
        bodiless, keep-alive /health request, answered by the fast path."""
        ...

    def logs(self, path: str) -> bool:
        """The access log records requests for ``path``."""
        ...

    def log_access(self, exchange: Exchange, connection: HttpConnection) -> None:
        """Record ``exchange``; called only when its response is ``logged``."""
        ...

    def register(self, connection: HttpConnection) -> bool:
        """False when the process is at its connection cap (or shutting down)."""
        ...

    def unregister(self, connection: HttpConnection) -> None: ...

    # Connections with bytes the client has not taken yet (writing paused, or closing with
    # a full buffer): the sweep calls ``send_expired`` once their ``send_deadline`` passes.
    sending: set[HttpConnection]


class Exchange:
    """One request and its response."""

    __slots__ = ("body", "error", "handler", "method", "path", "request", "response",
                 "started_at")

    def __init__(self, method: str, path: str, request: Request | None,
                 body: StreamingBody, response: ResponseStream,
                 handler: RouteHandler | None, error: GatewayHttpError | None) -> None:
        self.method = method
        self.path = path
        self.request = request
        self.body = body
        self.response = response
        self.handler = handler
        self.error = error
        self.started_at = time.monotonic()


class HttpConnection(asyncio.Protocol):
    # Slots: 50,000 of these live at once; they also make attribute access cheaper.
    __slots__ = ("_body_began", "_body_paused", "_completed_in_feed", "_drain_waiters", "_error",
                 "_fast_health", "_head_raw", "_head_size", "_headers", "_paused_at",
                 "_reading_paused", "_replayable", "_send_backlog", "_skipped_body", "_url",
                 "_write_paused", "active", "client", "closed", "deadline", "fresh_until", "host",
                 "keep_alive", "limits", "parser", "pending", "reading", "registered",
                 "send_deadline", "state", "task", "transport")

    def __init__(self, host: ConnectionHost) -> None:
        self.host = host
        self.limits = host.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.state = ReadState.IDLE
        self.deadline = 0.0  # loop time; 0: none
        self.fresh_until = 0.0  # until then, a connection that has sent nothing yet is spared
        self.client: tuple[str, int] = ("", 0)
        self.pending: deque[Exchange] = deque()  # parsed, waiting their turn
        self.active: Exchange | None = None  # being answered
        self.task: asyncio.Future[None] | None = None  # the active exchange's handler
        self.reading: Exchange | None = None  # whose body the parser is feeding
        self.keep_alive = True  # false once a request or error ends the connection
        self.closed = False
        self.registered = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._head_raw = 0
        self._completed_in_feed = 0
        self._body_paused = False
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._error: GatewayHttpError | None = None
        self._fast_health: tuple[bool, bool] | None = None  # (keep_alive, head_only)
        self._replayable: bool | None = None  # head_only of a keep-alive /health in this feed
        self._skipped_body: Exchange | None = None  # whose body llhttp skipped (Upgrade)
        self._body_began = 0.0  # when the body being read began, plus the time we paused it
        self._paused_at = 0.0  # when reading was last paused
        self.send_deadline = 0.0  # loop time; 0: the client takes what we write
        self._send_backlog = 0  # bytes waiting in the transport when send_deadline was set

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        if not self.host.register(self):
            # Over the cap: say so at once rather than hold a socket we cannot serve.
            transport.write(simple_response(503, b"Service Unavailable\n", self.host.date_header,
                                            close=True, extra=b"retry-after: 1\r\n"))
            transport.close()
            self.closed = True
            self.state = ReadState.DONE
            return
        self.registered = True
        peer = transport.get_extra_info("peername")
        if peer:
            self.client = (peer[0], peer[1])
        now = time.monotonic()
        self.deadline = now + self.limits.header_timeout
        self.fresh_until = now + FIRST_REQUEST_GRACE

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.registered:
            return
        self.registered = False
        self.closed = True
        self.host.unregister(self)
        if self.send_deadline:
            self.send_deadline = 0.0
            self.host.sending.discard(self)
        self.state = next_state(self.state, Event.STOP)
        gone = ClientDisconnected("the client closed the connection")
        for exchange in (self.reading, self.active, *self.pending):
            if exchange is not None:
                exchange.body.fail(gone)
        self._wake_drain(gone)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.fresh_until = 0.0
        state = self.state
        if state is ReadState.DONE:
            return
        # At a message boundary with nothing in flight, the parser is back in its start
        # state, so feeding it bytes it has already turned into exactly one fast /health
        # answer would produce that same answer again: reply without parsing. Anything else
        # (a different head, a partial one, two pipelined) differs byte-wise and is parsed.
        at_boundary = state is ReadState.IDLE and self.active is None and not self.pending \
            and self.keep_alive
        if at_boundary:
            reply = self.host.health_replies.get(data)
            if reply is not None:
                transport = self.transport
                assert transport is not None  # set by connection_made, before any data
                transport.write(reply)
                self.deadline = time.monotonic() + self.limits.keepalive_timeout
                return
        self._completed_in_feed = 0
        self._replayable = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if not self._feed_after_upgrade(data[upgrade.args[0]:]):
                return
        except httptools.HttpParserError as exc:
            self._refuse(self._error or _parser_error(exc))
            return
        if self._error is not None:
            self._refuse(self._error)
            return
        if at_boundary and self._replayable is not None and self._completed_in_feed == 1 \
                and self.state is ReadState.IDLE and self.keep_alive:
            self.host.remember_health(data, self._replayable)
        if self.state is ReadState.HEAD and not self._completed_in_feed:
            # httptools holds partial header lines itself, out of our callbacks' sight:
            # bound the raw bytes of a head still incomplete. A chunk in which a request
            # completed is not counted: where the next head began in it is unknown, and the
            # limit is one head's, never that of a read holding several. Its part of the
            # head escapes this count (at most one read), not the callbacks' once its lines
            # are complete.
            self._head_raw += len(data)
            if self._head_raw > self.limits.max_header_size:
                self._refuse(HeadersTooLarge())

    def _feed_after_upgrade(self, rest: bytes) -> bool:
        """llhttp stops after the head of a request asking for an Upgrade, as if the bytes
        after it were another protocol (it has called on_message_complete already, and
        resumed at a message boundary). The gateway ignores the Upgrade: ``rest`` is more
        HTTP/1.1, fed to ``self.parser`` — the same parser, or the one ``_dispatch_head``
        put in place to read the request's body. False when the connection was refused."""
        if self._skipped_body is not None:
            self.reading, self._skipped_body = self._skipped_body, None
        while self.state is not ReadState.DONE:
            try:
                self.parser.feed_data(rest)
                return True
            except httptools.HttpParserUpgrade as upgrade:
                rest = rest[upgrade.args[0]:]
                if self._skipped_body is not None:
                    self.reading, self._skipped_body = self._skipped_body, None
            except httptools.HttpParserError as exc:
                self._refuse(self._error or _parser_error(exc))
                return False
        return True

    def pause_writing(self) -> None:
        self._write_paused = True
        self._watch_sending()

    def resume_writing(self) -> None:
        self._write_paused = False
        transport = self.transport
        # A closing transport still has bytes to send (see _close): keep timing it.
        if self.send_deadline and not (transport is not None and transport.is_closing()):
            self.send_deadline = 0.0
            self.host.sending.discard(self)
        self._wake_drain(None)

    def eof_received(self) -> bool | None:
        if self.state is ReadState.HEAD or self.state is ReadState.BODY:
            self._refuse(BadRequest("the client closed the connection mid-request"))
        self.keep_alive = False
        # True: keep the transport to finish answering, then close; False: close now.
        return self.active is not None or bool(self.pending)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.state = next_state(self.state, Event.MESSAGE_BEGIN)
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._head_raw = 0
        self.deadline = time.monotonic() + self.limits.header_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self.limits.max_header_size:
            self._error = HeadersTooLarge()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.limits.max_header_size:
            # Raised here, not at on_headers_complete: trailer fields have none after them.
            self._error = HeadersTooLarge()
            raise self._error
        if CHECK_HEADERS:
            problem = header_problem(name, value)
            if problem is not None:
                self._error = problem
                raise problem
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self._error is not None:
            raise self._error  # stops the parser; data_received answers it
        try:
            self._dispatch_head()
        except GatewayHttpError as exc:
            self._error = exc
            raise

    def _dispatch_head(self) -> None:
        self.state = next_state(self.state, Event.HEADERS_COMPLETE)
        self.deadline = time.monotonic() + self.limits.body_timeout
        parser = self.parser
        raw_method = parser.get_method()
        http_version = parser.get_http_version()
        if http_version != "1.1" and http_version != "1.0":
            raise VersionNotSupported(f"HTTP/{http_version} is not supported")
        keep_alive = parser.should_keep_alive()
        headers = self._headers
        framing = decide_framing(http_version, headers, self.limits.max_body_size)
        if framing.has_body:
            now = time.monotonic()
            self._body_began = now
            self.deadline = self.limits.body_deadline(now, now, 0)
        url = self._url
        if url == HEALTH_PATH and self.host.health_fast_path and not framing.has_body \
                and (raw_method == b"GET" or raw_method == b"HEAD") \
                and self.active is None and not self.pending:
            # The benchmark path: no objects, answered whole at message complete.
            self._fast_health = (keep_alive and self.keep_alive, raw_method == b"HEAD")
            return
        method = _METHODS.get(raw_method) or _other_method(raw_method)
        if _PLAIN_PATH(url) is not None:
            # A plain path, whose characters llhttp has checked: nothing to split or decode.
            path = target = url.decode("latin-1")
            query = ""
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                raise BadRequest(f"invalid request target {url[:100]!r}") from None
            if parsed.fragment is not None:  # routed without it, the app would see it
                raise BadRequest("a fragment in the request target")
            path = unquote(parsed.path.decode("latin-1")) if parsed.path else "/"
            query = parsed.query.decode("latin-1") if parsed.query else ""
            if parsed.schema is None:
                target = url.decode("latin-1")
            else:
                target, headers = _origin_form(url, parsed, headers)
            if "\x00" in path:
                raise BadRequest("NUL in the request path")
        upgrading = False
        if framing.has_body:
            body = StreamingBody(framing.content_length, self, framing.expect_continue)
            if framing.chunked:
                # Fields after the last chunk come through on_header like the head's.
                self._headers = _TrailerFields(self.host)
                self._head_size = 0
            upgrading = parser.should_upgrade()
        else:
            body = StreamingBody.empty()
        response = ResponseStream(self, http_version == "1.1", method == "HEAD",
                                  keep_alive and self.keep_alive, body, self.host.logs(path))
        # Positional (in field order): a keyword call costs twice as much, every request.
        request = Request(method, target, path, query, http_version, headers, body,
                          self.client[0], self.client[1], self.host.server_port, "http",
                          keep_alive)
        handler = self.host.route(method, path)
        exchange = Exchange(method, path, request, body, response, handler, None)
        if upgrading:
            # llhttp will skip this body (see _feed_after_upgrade): another parser reads it.
            self.parser = _AfterUpgrade.parser(self, framing, keep_alive)
            self._skipped_body = exchange
        else:
            self.reading = exchange
        self._enqueue(exchange)

    def on_body(self, data: bytes) -> None:
        exchange = self.reading
        if exchange is None:
            return
        received = exchange.body.received + len(data)
        self.deadline = self.limits.body_deadline(time.monotonic(), self._body_began, received)
        if received > self.limits.max_body_size:
            self._error = BodyTooLarge(f"body is over the limit of {self.limits.max_body_size}")
            exchange.body.fail(self._error)
            raise self._error
        exchange.body.feed(data)

    def on_message_complete(self) -> None:
        if self._fast_health is not None:
            self.state = next_state(self.state, Event.MESSAGE_COMPLETE)
            self._completed_in_feed += 1
            keep_alive, head_only = self._fast_health
            self._fast_health = None
            self.write(self.host.health_response(keep_alive, head_only))
            if keep_alive:
                self._replayable = head_only
            else:
                self.state = next_state(self.state, Event.STOP)
                self._close()
                return
            self.deadline = time.monotonic() + self.limits.keepalive_timeout
            return
        exchange = self.reading
        if exchange is None:
            return  # llhttp skipped the body of an Upgrade request: _AfterUpgrade reads it
        self.state = next_state(self.state, Event.MESSAGE_COMPLETE)
        self._completed_in_feed += 1
        self.reading = None
        exchange.body.finish()
        if not exchange.response.keep_alive or not self.keep_alive:
            self.state = next_state(self.state, Event.STOP)
            self._update_reading()
        self.deadline = 0.0 if self.active is not None else \
            time.monotonic() + self.limits.keepalive_timeout

    # exchanges, in order

    def _enqueue(self, exchange: Exchange) -> None:
        if self.active is None and not self.pending:
            if self._start(exchange):
                self._after_exchange(exchange)
        else:
            self.pending.append(exchange)
            self._update_reading()

    def _start(self, exchange: Exchange) -> bool:
        """Begin answering ``exchange``; True when it was answered synchronously."""
        if exchange.error is None and exchange.path == "/health" and self.host.health_fast_path \
                and exchange.body.complete and exchange.method in ("GET", "HEAD"):
            self._answer_health(exchange)
            return True
        self.active = exchange
        handler = exchange.handler
        start_now = getattr(handler, "start_now", None)  # an EagerRouteHandler
        if start_now is not None and exchange.error is None and exchange.request is not None \
                and start_now(exchange.request, exchange.response,
                              lambda exc: self._eager_done(exchange, exc)):
            return False
        self.task = asyncio.ensure_future(self._run(exchange))
        return False

    def _eager_done(self, exchange: Exchange, exc: BaseException | None) -> None:
        """An ``EagerRouteHandler`` finished ``exchange``: what ``_run`` does after its await."""
        if exc is None and not exchange.response.started:
            exc = RuntimeError("the handler returned without a response")
        if isinstance(exc, asyncio.CancelledError):
            self.abort()
        elif isinstance(exc, GatewayHttpError):
            self._answer_error(exchange, exc)
        elif exc is not None:
            log.error("handler failed on %s %s", exchange.method, exchange.path, exc_info=exc)
            self._answer_error(exchange, None)
        self._finished(exchange)

    def _answer_health(self, exchange: Exchange) -> None:
        """/health without a task: the benchmark path, answered in the parser callback."""
        response = exchange.response
        self.write(simple_response(200, b"OK", self.host.date_header,
                                   close=not response.keep_alive, head_only=response.head_only))
        response.started = response.sent = response.ended = True
        response.status = 200
        response.body_bytes = 2

    async def _run(self, exchange: Exchange) -> None:
        response = exchange.response
        try:
            if exchange.error is not None:
                raise exchange.error
            assert exchange.handler is not None and exchange.request is not None
            await exchange.handler.handle(exchange.request, response)
            if not response.started:
                raise RuntimeError("the handler returned without a response")
            await response.end()
        except GatewayHttpError as exc:
            self._answer_error(exchange, exc)
        except asyncio.CancelledError:
            self.abort()
            raise
        except Exception:
            log.exception("handler failed on %s %s", exchange.method, exchange.path)
            self._answer_error(exchange, None)
        self._finished(exchange)

    def _answer_error(self, exchange: Exchange, exc: GatewayHttpError | None) -> None:
        response = exchange.response
        # A started response whose head is still held back can yet become the error.
        if response.sent or self.closed or isinstance(exc, ClientDisconnected):
            if not response.ended:
                response.keep_alive = False  # cut short: the client cannot trust the framing
            return
        status = exc.http_status if exc is not None else 500
        if exc is None or exc.close_connection or not exchange.body.complete:
            response.keep_alive = False
        extra = b""
        if isinstance(exc, ServiceUnavailable):
            extra = b"retry-after: %d\r\n" % exc.retry_after
        message = str(exc) if exc is not None and status < 500 else ""
        body = f"{reason_phrase(status).decode()}{': ' + message if message else ''}\n".encode()
        self.write(simple_response(status, body, self.host.date_header,
                                   close=not response.keep_alive, extra=extra,
                                   head_only=response.head_only))
        response.started = response.sent = response.ended = True
        response.status = status
        response.body_bytes = len(body)

    def _finished(self, exchange: Exchange) -> None:
        self.active = None
        self._after_exchange(exchange)

    def _after_exchange(self, exchange: Exchange) -> None:
        """Log ``exchange``, then start the next one in line (answering synchronous ones in a
        loop, not by recursion), or close, or wait for the next request."""
        while True:
            if exchange.response.logged:
                self.host.log_access(exchange, self)
            # An unread body leaves the framing unknown: close rather than guess.
            if not exchange.body.complete or not exchange.response.keep_alive or self.closed:
                self._close()
                return
            if not self.pending:
                if not self.keep_alive:
                    self._close()
                    return
                break
            exchange = self.pending.popleft()
            if not self._start(exchange):
                break
        if self.active is None and self.state is ReadState.IDLE:
            self.deadline = time.monotonic() + self.limits.keepalive_timeout
        self._update_reading()

    def _refuse(self, error: GatewayHttpError) -> None:
        """Stop reading; answer ``error`` in turn, then close."""
        self._error = error
        self.keep_alive = False
        exchange = self.reading
        self.reading = None
        self.state = next_state(self.state, Event.STOP)
        if exchange is not None and not exchange.body.complete:
            exchange.body.fail(error)  # its handler sees the error; nothing more is read
            if exchange is not self.active and exchange in self.pending:
                exchange.error = error
        else:
            response = ResponseStream(self, http11=True, head_only=False, keep_alive=False,
                                      logged=self.host.logs("-"))
            self._enqueue(Exchange("-", "-", None, StreamingBody.empty(), response, None, error))
        self._update_reading()

    # flow control (used by StreamingBody and ResponseStream)

    def pause_body(self) -> None:
        self._body_paused = True
        self._update_reading()

    def resume_body(self) -> None:
        self._body_paused = False
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        pause = self._body_paused or bool(self.pending) or self.state is ReadState.DONE
        if pause and not self._reading_paused:
            self._reading_paused = True
            self._paused_at = time.monotonic()
            transport.pause_reading()
        elif not pause and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
            if self.state is ReadState.BODY and self.reading is not None:
                # Our pause is not the client's slowness: its body's clock stood still.
                now = time.monotonic()
                self._body_began += now - self._paused_at
                self.deadline = self.limits.body_deadline(now, self._body_began,
                                                          self.reading.body.received)

    def send_continue(self) -> None:
        if self.active is not None and self.active is self.reading \
                and not self.active.response.sent:
            self.write(CONTINUE_100)

    @property
    def date_header(self) -> bytes:
        return self.host.date_header

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise ClientDisconnected("the client closed the connection")
        self.transport.write(data)

    @property
    def writing_paused(self) -> bool:
        return self._write_paused

    async def drain(self) -> None:
        if self.closed:
            raise ClientDisconnected("the client closed the connection")
        if not self._write_paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def _wake_drain(self, exc: BaseException | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)
                    waiter.exception()  # retrieved: a handler may be gone already

    async def sendfile(self, fd: int, offset: int, count: int) -> None:
        """Zero-copy while the socket keeps up (os.sendfile on an empty write buffer);
        when it would block, one chunk goes through the transport and we wait for it to
        drain completely before trying sendfile again (uvloop has no loop.sendfile)."""
        transport = self.transport
        if transport is None or self.closed:
            raise ClientDisconnected("the client closed the connection")
        socket_fd = transport.get_extra_info("socket").fileno()
        low, high = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=64 * 1024, low=0)
        try:
            while count > 0:
                if self.closed:
                    raise ClientDisconnected("the client closed the connection")
                if transport.get_write_buffer_size() == 0:
                    try:
                        sent = os.sendfile(socket_fd, fd, offset, count)
                    except BlockingIOError:
                        sent = -1
                    if sent == 0:
                        raise ClientDisconnected("file shrank while being sent")
                    if sent > 0:
                        offset += sent
                        count -= sent
                        continue
                data = os.pread(fd, min(count, 256 * 1024), offset)
                if not data:
                    raise ClientDisconnected("file shrank while being sent")
                self.write(data)
                offset += len(data)
                count -= len(data)
                await self.drain()
        finally:
            if not self.closed:
                transport.set_write_buffer_limits(high=high, low=low)

    # deadlines and shutdown

    def expire(self, now: float) -> None:
        """Called by the sweep when ``deadline`` has passed."""
        if self.state is ReadState.DONE and self.active is None:
            self.abort()  # refused, and the client does not even read the answer
            return
        expiry = expiry_for(self.state, self.active is not None,
                            self._reading_paused and self.state is ReadState.BODY)
        if expiry is Expiry.NONE:
            self.deadline = 0.0
        elif expiry is Expiry.CLOSE_IDLE:
            self._close()
        else:
            self._refuse(RequestTimeout("the client was too slow sending the request"))
            self.deadline = now + 5.0  # a client that never reads the 408 is cut then

    def close_if_idle(self, now: float) -> bool:
        """For shutdown: close now when nothing is being received or answered; True if
        closed. A connection accepted moments ago that has sent nothing yet is a client
        whose request is on its way: it gets FIRST_REQUEST_GRACE to send it, and its answer
        closes the connection (keep_alive is off from here on)."""
        self.keep_alive = False
        if self.active is None and not self.pending \
                and self.state in (ReadState.IDLE, ReadState.DONE) and now >= self.fresh_until:
            self._close()
            return True
        return False

    def _watch_sending(self) -> None:
        """Time the client: it must take some of what waits for it within send_timeout."""
        transport = self.transport
        self._send_backlog = transport.get_write_buffer_size() if transport is not None else 0
        self.send_deadline = time.monotonic() + self.limits.send_timeout
        self.host.sending.add(self)

    def send_expired(self, now: float) -> None:
        """Called by the sweep once ``send_deadline`` has passed: the client took nothing
        since the deadline was set (nginx's send_timeout, between two successful writes),
        so the connection is cut; if it took some, it gets another send_timeout."""
        transport = self.transport
        backlog = transport.get_write_buffer_size() if transport is not None else 0
        if transport is None or self.closed or not backlog:
            self.send_deadline = 0.0
            self.host.sending.discard(self)
            return
        if backlog < self._send_backlog:
            self._send_backlog = backlog
            self.send_deadline = now + self.limits.send_timeout
            return
        self.send_deadline = 0.0
        self.host.sending.discard(self)
        # close() would wait for the client to take the rest. A reset also frees what the
        # kernel still holds for it at once, rather than after minutes in FIN_WAIT1
        # (nginx's reset_timedout_connection).
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        self.abort()

    def _close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()
            if transport.get_write_buffer_size() and not self.send_deadline:
                # The transport closes once the client has taken the rest: time it.
                self._watch_sending()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()



def _parser_error(exc: httptools.HttpParserError) -> GatewayHttpError:
    """What the client is told when llhttp refuses its bytes."""
    if str(exc) == "Invalid HTTP version":  # HTTP/1.2, HTTP/0.9 (2.0 and 3.0 pass llhttp)
        return VersionNotSupported("only HTTP/1.0 and HTTP/1.1 are supported")
    return BadRequest(f"malformed request: {exc}")


def _other_method(raw_method: bytes) -> str:
    """A method outside ``_METHODS``; CONNECT is refused (no tunnels through the gateway)."""
    if raw_method == b"CONNECT":
        raise MethodNotImplemented("CONNECT is not supported")
    return raw_method.decode("ascii", "replace")


def _origin_form(url: bytes, parsed: URL,
                 headers: list[tuple[bytes, bytes]]) -> tuple[str, list[tuple[bytes, bytes]]]:
    """The origin-form target of an absolute-form one, and the headers with Host set to its
    authority: the received Host is ignored (RFC 9112 §3.2.2), so the app sees the URL's
    host wherever the client put it, and one Host."""
    scheme = parsed.schema.lower()
    if scheme not in (b"http", b"https"):
        raise BadRequest(f"request target with scheme {scheme[:20]!r}")
    authority = url[len(scheme) + 3:]
    for end in (b"/", b"?", b"#"):
        authority = authority.split(end, 1)[0]
    if b"@" in authority:
        raise BadRequest("userinfo in the request target")
    target = parsed.path or b"/"
    if parsed.query is not None:
        target += b"?" + parsed.query
    at = next((i for i, (name, _) in enumerate(headers) if name == b"host"), 0)
    rest = [field for field in headers if field[0] != b"host"]
    return target.decode("latin-1"), [*rest[:at], (b"host", authority), *rest[at:]]


class _TrailerFields(list[tuple[bytes, bytes]]):
    """Where ``on_header`` puts what follows a chunked body: trailer fields. They are never
    merged into the head (a second Host, a Connection naming Host for removal, credentials
    added after any check of the head); dropped, as nginx does, and counted."""

    __slots__ = ("host",)

    def __init__(self, host: ConnectionHost) -> None:
        super().__init__()
        self.host = host

    def append(self, field: tuple[bytes, bytes]) -> None:
        self.host.trailer_fields_dropped += 1


class _AfterUpgrade:
    """The callbacks of the parser that reads on after a request with a body that asked for
    an Upgrade. llhttp stops at the end of such a head and skips its body, so a second
    parser is fed a stand-in head with the same framing (its callbacks dropped here), reads
    the body (``HttpConnection.reading``), and then parses the rest of the connection
    through the connection's own callbacks (at the cost of this one extra call each)."""

    __slots__ = ("connection", "stand_in")

    def __init__(self, connection: HttpConnection) -> None:
        self.connection = connection
        self.stand_in = True

    @classmethod
    def parser(cls, connection: HttpConnection, framing: Framing,
               keep_alive: bool) -> httptools.HttpRequestParser:
        parser = httptools.HttpRequestParser(cls(connection))
        parser.feed_data(b"PUT / HTTP/1.1\r\nConnection: %b\r\n%b\r\n" % (
            b"keep-alive" if keep_alive else b"close",
            b"Transfer-Encoding: chunked\r\n" if framing.chunked else
            b"Content-Length: %d\r\n" % (framing.content_length or 0)))
        return parser

    def on_message_begin(self) -> None:
        if not self.stand_in:
            self.connection.on_message_begin()

    def on_url(self, url: bytes) -> None:
        if not self.stand_in:
            self.connection.on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.stand_in:
            self.connection.on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.stand_in:
            self.stand_in = False
        else:
            self.connection.on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.connection.on_body(body)

    def on_message_complete(self) -> None:
        self.connection.on_message_complete()
