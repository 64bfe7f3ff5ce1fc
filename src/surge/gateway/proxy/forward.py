"""The proxy route's request cycle: read the body, take a slot, send, relay the response.

The request body is read whole before a target slot is taken (nginx's
proxy_request_buffering on): in memory up to ``body_buffer_size``, the rest in a temporary
file, so a slow uploader never holds one of Starman's few workers, and the body can be
sent again on a retry. It reaches the target with a Content-Length, even when the client
sent it chunked. With ``request_buffering = false`` a route streams the body to the target
as it arrives, holding the slot meanwhile (a small body of known length, up to
``BUFFERED_BODY_LIMIT``, is still read first).

The response is read as fast as the target sends it (``upstream.BodyBuffering``): the slot
and the pooled connection go back as soon as the target has finished, whatever the
client's speed (nginx's proxy_buffering on; ``response_buffering = false`` streams it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from surge.gateway.exchange import Request, RequestBody, ResponseWriter
from surge.gateway.proxy.admission import Waiter
from surge.gateway.proxy.balancing import Target
from surge.gateway.proxy.deadlines import DeadlineSweep
from surge.gateway.proxy.errors import (
    NoCapacity,
    ProxyError,
    UpstreamConnectError,
    UpstreamTimeout,
)
from surge.gateway.proxy.headers import request_head
from surge.gateway.proxy.pool import Prepared, TargetPool
from surge.gateway.proxy.retry import Retry, after_failure
from surge.gateway.proxy.upstream import (
    STREAMING,
    BodyBuffering,
    ConnectionPool,
    UpstreamConnection,
    UpstreamResponse,
)
from surge.gateway.spool import TempFile, TempFiles

log = logging.getLogger("surge.gateway.proxy")

# Without request buffering, a body of known length up to this is still read first.
BUFFERED_BODY_LIMIT = 64 * 1024
# What one read of a request body's temporary file sends to the target.
SPOOLED_SEND_SIZE = 256 * 1024
# The task-free path gathers a response body up to this before answering; past it, the
# coroutine path streams the rest to the client.
EAGER_BODY_LIMIT = 64 * 1024
RETRY_AFTER_SECONDS = b"1"
_REASONS = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class _StreamedBody:
    """Sends a request body that is read from the client while it is forwarded."""

    def __init__(self, body: RequestBody, chunked: bool) -> None:
        self.body = body
        self.chunked = chunked
        self.started = False

    @property
    def replayable(self) -> bool:
        return not self.started  # once read, it is gone

    async def send(self, connection: UpstreamConnection, timeout: float) -> None:
        self.started = True
        async for piece in self.body:
            if not piece:
                continue
            if self.chunked:
                connection.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            else:
                connection.write(piece)
            await connection.drain(timeout)
        if self.chunked:
            connection.write(b"0\r\n\r\n")


class _SpooledBody:
    """Sends a request body read whole into a temporary file, as often as attempts ask."""

    replayable = True

    def __init__(self, file: TempFile) -> None:
        self.file = file

    async def send(self, connection: UpstreamConnection, timeout: float) -> None:
        file = self.file
        offset = 0
        while offset < file.size:
            piece = file.read(offset, SPOOLED_SEND_SIZE)
            offset += len(piece)
            connection.write(piece)
            await connection.drain(timeout)


_OutgoingBody = _StreamedBody | _SpooledBody


class ProxyHandler:
    """The ``RouteHandler`` of one proxy route. ``body_memory``: read request bodies whole
    first, up to this in memory and the rest in one of ``temp_files`` (None: stream them);
    ``response_buffering``: where a response waits for the client."""

    def __init__(self, pool: TargetPool, clock: Callable[[], float] = time.monotonic, *,
                 body_memory: int | None = None, temp_files: TempFiles | None = None,
                 response_buffering: BodyBuffering = STREAMING) -> None:
        self.pool = pool
        self.clock = clock
        self.read_timeout = pool.settings.read_timeout
        self.eager_deadlines = DeadlineSweep(self.read_timeout, clock)
        self.body_memory = body_memory
        self.temp_files = temp_files
        self.response_buffering = response_buffering

    def start_now(self, request: Request, response: ResponseWriter,
                  done: Callable[[BaseException | None], None]) -> bool:
        """Begin a bodiless request without a task (``exchange.EagerRouteHandler``): the
        slot, the send and a response that arrives whole are handled in callbacks, which
        is most of the proxy's traffic. Anything else — a connection to open, a response
        still streaming, a failure to retry — continues in the coroutine path. False when
        the request has a body: ``handle`` takes it from the start."""
        body = request.body
        if body.content_length or not body.complete or (
                body.content_length is None and request.header(b"transfer-encoding") is not None):
            return False  # (content_length 0: no Transfer-Encoding, decide_framing saw to it)
        _EagerExchange(self, request, response, done, _head_for(request, 0)).begin()
        return True

    async def handle(self, request: Request, response: ResponseWriter) -> None:
        body = request.body
        chunked = request.header(b"transfer-encoding") is not None
        length = None if chunked else (body.content_length or 0)
        buffered: bytes | None = None
        outgoing: _OutgoingBody | None = None
        if length == 0:
            buffered = b""
        elif self.body_memory is not None and self.temp_files is not None:
            kept = await _read_whole_body(body, self.body_memory, self.temp_files)
            if isinstance(kept, TempFile):
                outgoing = _SpooledBody(kept)
                length = kept.size
            else:
                buffered = kept
                length = len(kept)
        elif length is not None and length <= BUFFERED_BODY_LIMIT:
            buffered = await _read_small_body(body)
            length = len(buffered)
        else:
            outgoing = _StreamedBody(body, chunked)
        head = _head_for(request, length)
        whole_request = (head + buffered if buffered else head) if buffered is not None else None
        try:
            await self.cycle(request, response, head, whole_request, outgoing)
        finally:
            if isinstance(outgoing, _SpooledBody):
                outgoing.file.close()

    async def cycle(
        self,
        request: Request,
        response: ResponseWriter,
        head: bytes,
        whole_request: bytes | None,
        outgoing: _OutgoingBody | None,
        acquired: tuple[Target, Prepared | None] | None = None,
    ) -> None:
        """Attempts on targets until one answers or no retry is allowed. The request is
        ``whole_request`` when it is all in memory, else ``head`` then ``outgoing``.
        ``acquired``: a slot (and maybe the request already sent) that the task-free path
        hands over."""
        pool = self.pool
        tried: list[Target] = []
        skip_body = request.method == "HEAD"
        fresh = False  # the next attempt opens a new connection
        while True:
            if acquired is not None:
                (target, prepared), acquired = acquired, None
            else:
                try:
                    target, prepared = await pool.acquire(
                        tried, None if fresh else whole_request, skip_body,
                        self.response_buffering)
                except NoCapacity as exc:
                    await _answer_from_gateway(response, 503, str(exc), retry_after=True)
                    return
            tried.append(target)
            slot = _Slot(pool, target)
            try:
                await self._attempt(slot, request, response, head, whole_request, outgoing,
                                    prepared, fresh=fresh)
                return
            except ProxyError as exc:
                if isinstance(exc, UpstreamConnectError):
                    pool.record_connect_failure(target)
                slot.release()  # before counting the targets left to try
                retry = after_failure(
                    exc, request.method, response_started=response.started,
                    body_replayable=outgoing is None or outgoing.replayable,
                    attempts=len(tried), other_targets=pool.other_routable(tried),
                    on_new_connection=fresh)
                fresh = retry is Retry.ON_A_NEW_CONNECTION
                if fresh:
                    tried.remove(target)
                    pool.counters.retries += 1
                    log.info("pool %s: %s %s met a closed keep-alive connection to %s; "
                             "again on a new one", pool.name, request.method, request.target,
                             target.address)
                    continue
                if retry is Retry.ELSEWHERE:
                    pool.counters.retries += 1
                    log.info("pool %s: %s %s failed on %s (%s), retrying elsewhere",
                             pool.name, request.method, request.target, target.address, exc)
                    continue
                if response.started:
                    raise  # the client has part of a response: the server closes the connection
                if isinstance(exc, UpstreamTimeout):
                    pool.counters.gateway_504 += 1
                else:
                    pool.counters.gateway_502 += 1
                log.warning("pool %s: %s %s → %s: %s", pool.name, request.method,
                            request.target, exc.http_status, exc)
                await _answer_from_gateway(response, exc.http_status, str(exc))
                return
            finally:
                slot.release()

    async def _attempt(
        self,
        slot: _Slot,
        request: Request,
        response: ResponseWriter,
        head: bytes,
        whole_request: bytes | None,
        outgoing: _OutgoingBody | None,
        prepared: Prepared | None,
        *,
        fresh: bool = False,
    ) -> None:
        target = slot.target
        connections = self.pool.connections_to(target)
        started_at = self.clock()
        if prepared is not None:
            connection, upstream = prepared  # sent already, when the slot was granted
        else:
            connection, _ = await connections.get(fresh=fresh)
            upstream = connection.begin(request.method == "HEAD", self.response_buffering)
        try:
            if prepared is None:
                if whole_request is not None:
                    connection.write(whole_request)
                else:
                    assert outgoing is not None
                    connection.write(head)
                    await outgoing.send(connection, self.read_timeout)

            def release_early(done: UpstreamResponse) -> None:
                # The whole response is here: free the connection and the slot now, so the
                # next waiting request goes out in this same loop turn, while the client
                # takes its time over this one.
                connections.put(connection, done)
                slot.release()

            if upstream.complete:
                release_early(upstream)
            else:
                upstream.on_complete = release_early
            await upstream.read_head(self.read_timeout)
            _start_forwarded(response, target, upstream, self.clock() - started_at)
            while piece := await upstream.read_body(self.read_timeout):
                await response.write(piece)
            await response.end()
        finally:
            upstream.on_complete = None
            connections.put(connection, upstream)
            upstream.close_file()


_continuations: set[asyncio.Future[None]] = set()


class _EagerExchange:
    """One bodiless request followed from callbacks: slot → send → whole response → client.

    It owns the slot and the upstream connection until it either finishes (both given
    back before the answer is written, so the next waiting request goes out first) or
    hands them to ``ProxyHandler.cycle`` in a task, which then owns them."""

    __slots__ = ("connection", "connections", "done", "handler", "head", "request",
                 "response", "slot", "started_at", "upstream", "watched")

    def __init__(self, handler: ProxyHandler, request: Request, response: ResponseWriter,
                 done: Callable[[BaseException | None], None], head: bytes) -> None:
        self.handler = handler
        self.request = request
        self.response = response
        self.done = done
        self.head = head
        self.slot: _Slot | None = None
        self.connections: ConnectionPool | None = None
        self.connection: UpstreamConnection | None = None
        self.upstream: UpstreamResponse | None = None
        self.watched = False  # in the handler's read-timeout sweep
        self.started_at = 0.0

    def begin(self) -> None:
        pool = self.handler.pool
        target = pool.try_acquire_now()
        if target is not None:
            self._granted(target)
            return
        try:
            pool.wait_for_slot(self._settled)
        except NoCapacity as exc:
            self._continue(_answer_from_gateway(self.response, 503, str(exc), retry_after=True))

    def _settled(self, waiter: Waiter) -> None:
        self._granted(waiter.granted)

    def _granted(self, target: Target | None) -> None:
        handler = self.handler
        pool = handler.pool
        if target is None:  # queue_timeout passed in line
            self._continue(_answer_from_gateway(
                self.response, 503, str(pool.queue_timeout_error()), retry_after=True))
            return
        self.slot = _Slot(pool, target)
        self.connections = pool.connections_to(target)
        prepared = pool.send_on_idle(target, self.head, self.request.method == "HEAD",
                                     handler.response_buffering)
        if prepared is None:  # a connection to open: the coroutine path does that
            self._hand_over(None)
            return
        connection, upstream = prepared
        self.connection, self.upstream = connection, upstream
        self.started_at = handler.clock()
        upstream.listener = self._on_upstream
        handler.eager_deadlines.watch(self, self.started_at)
        self.watched = True

    def _on_upstream(self, upstream: UpstreamResponse) -> None:
        if upstream.error is None:
            if upstream.complete:
                self._finish(upstream)
                return
            if not upstream.connection.closed and upstream.body_buffered <= EAGER_BODY_LIMIT:
                # Head still arriving, or a small body after it (Starman writes the head
                # and the body in two writes): wait for the rest here.
                return
        # A failure (cycle retries or answers it) or a large body still arriving (cycle
        # streams it): the coroutine path takes over with what was sent.
        self._hand_over((upstream.connection, upstream))

    def expired(self) -> None:
        """No response within the read timeout (``DeadlineSweep``)."""
        self.watched = False
        upstream = self.upstream
        assert upstream is not None
        upstream.error = UpstreamTimeout(
            f"the target took longer than {self.handler.read_timeout:g}s responding")
        self._hand_over((upstream.connection, upstream))

    def _finish(self, upstream: UpstreamResponse) -> None:
        self._detach()
        slot, connections, connection = self.slot, self.connections, self.connection
        assert slot is not None and connections is not None and connection is not None
        connections.put(connection, upstream)
        slot.release()  # may send the next waiting request right now
        response = self.response
        try:
            _start_forwarded(response, slot.target, upstream,
                             self.handler.clock() - self.started_at)
            keeping_up = response.end_with(upstream.take_body())
        except Exception as exc:  # the client went away: the connection logs and closes
            self.done(exc)
            return
        if keeping_up:
            self.done(None)
        else:
            self._continue(response.drained())

    def _hand_over(self, prepared: Prepared | None) -> None:
        self._detach()
        slot = self.slot
        assert slot is not None
        slot.held = False  # cycle() takes the slot over with its own _Slot
        self._continue(self.handler.cycle(self.request, self.response, self.head, self.head,
                                          None, acquired=(slot.target, prepared)))

    def _detach(self) -> None:
        if self.upstream is not None:
            self.upstream.listener = None
        if self.watched:
            self.watched = False
            self.handler.eager_deadlines.forget(self)

    def _continue(self, work: Coroutine[Any, Any, None]) -> None:
        """Finish in a task (the rare paths), then report to the connection."""
        response, done = self.response, self.done

        async def run() -> None:
            try:
                await work
                await response.end()
            except asyncio.CancelledError:
                done(asyncio.CancelledError())
                raise
            except BaseException as exc:
                done(exc)
                return
            done(None)

        task = asyncio.ensure_future(run())
        _continuations.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(_continuations.discard)


class _Slot:
    """A request's place on a target; given back exactly once, early or at the end."""

    __slots__ = ("held", "pool", "target")

    def __init__(self, pool: TargetPool, target: Target) -> None:
        self.pool = pool
        self.target = target
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.pool.release(self.target)


def _start_forwarded(response: ResponseWriter, target: Target, upstream: UpstreamResponse,
                     target_time: float) -> None:
    """Start the client's response with the target's status and headers, counting a 5xx
    against the target and noting it in the access log."""
    status = upstream.status
    if status >= 500:
        target.responses_5xx += 1
    if response.logged:
        response.set_log_fields(target=target.address, target_status=status,
                                target_time=round(target_time, 6))
    response.start(status, upstream.headers)


def _head_for(request: Request, body_length: int | None) -> bytes:
    """The request line and headers sent to the target (``None``: a chunked body)."""
    return request_head(request.method, request.target, request.headers,
                        client_host=request.client_host, scheme=request.scheme,
                        server_port=request.server_port, body_length=body_length)


async def _read_small_body(body: RequestBody) -> bytes:
    pieces = [piece async for piece in body]
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


async def _read_whole_body(body: RequestBody, memory: int,
                           temp_files: TempFiles) -> bytes | TempFile:
    """The whole body: in memory up to ``memory`` bytes, else in a temporary file (all of
    it, so that it is sent from one place). The connection bounds it by max_body_size and
    times the client (408)."""
    pieces: list[bytes] = []
    size = 0
    file: TempFile | None = None
    try:
        async for piece in body:
            if file is None:
                size += len(piece)
                if size <= memory:
                    pieces.append(piece)
                    continue
                file = temp_files.new()
                for earlier in pieces:
                    file.append(earlier)
                pieces.clear()
            file.append(piece)
    except BaseException:
        if file is not None:
            file.close()
        raise
    if file is not None:
        return file
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


async def _answer_from_gateway(
    response: ResponseWriter, status: int, detail: str, *, retry_after: bool = False
) -> None:
    response.set_log_fields(proxy_error=detail)
    body = f"{status} {_REASONS.get(status, 'Error')}\n".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", RETRY_AFTER_SECONDS))
    response.start(status, headers)
    await response.write(body)
    await response.end()
