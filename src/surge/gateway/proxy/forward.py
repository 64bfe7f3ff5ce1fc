"""The proxy route's request cycle: take a slot, send the request, stream the response.

A small body (known length up to ``BUFFERED_BODY_LIMIT``) is read before a target slot is
taken, as nginx does, so a slow uploader never holds one of Starman's few workers, and so
the request can be sent again on a retry. Larger and chunked bodies are streamed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from surge.gateway.exchange import Request, RequestBody, ResponseWriter
from surge.gateway.proxy.balancing import Target
from surge.gateway.proxy.errors import (
    NoCapacity,
    ProxyError,
    UpstreamBroken,
    UpstreamConnectError,
    UpstreamTimeout,
)
from surge.gateway.proxy.headers import request_head, request_headers, response_headers
from surge.gateway.proxy.pool import Prepared, TargetPool
from surge.gateway.proxy.retry import may_retry
from surge.gateway.proxy.upstream import UpstreamConnection, UpstreamResponse

log = logging.getLogger("surge.gateway.proxy")

BUFFERED_BODY_LIMIT = 64 * 1024
RETRY_AFTER_SECONDS = b"1"
_REASONS = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class _StreamedBody:
    """Sends a request body that is read from the client while it is forwarded."""

    def __init__(self, body: RequestBody, chunked: bool) -> None:
        self.body = body
        self.chunked = chunked
        self.started = False

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


class ProxyHandler:
    """The ``RouteHandler`` of one proxy route."""

    def __init__(self, pool: TargetPool, clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        self.clock = clock
        self.read_timeout = pool.settings.read_timeout

    async def handle(self, request: Request, response: ResponseWriter) -> None:
        pool = self.pool
        chunked = request.header(b"transfer-encoding") is not None
        length = None if chunked else (request.body.content_length or 0)
        buffered: bytes | None = None
        streamed: _StreamedBody | None = None
        if length is not None and length <= BUFFERED_BODY_LIMIT:
            buffered = await _read_small_body(request.body) if length else b""
            length = len(buffered)
        else:
            streamed = _StreamedBody(request.body, chunked)
        head = request_head(request.method, request.target, request_headers(
            request.headers, client_host=request.client_host, scheme=request.scheme,
            server_port=request.server_port, body_length=length))
        tried: list[Target] = []
        skip_body = request.method == "HEAD"
        whole_request = (head + buffered if buffered else head) if buffered is not None else None
        while True:
            try:
                target, prepared = await pool.acquire(tried, whole_request, skip_body)
            except NoCapacity as exc:
                await _answer_from_gateway(response, 503, str(exc), retry_after=True)
                return
            tried.append(target)
            slot = _Slot(pool, target)
            try:
                await self._attempt(slot, request, response, head, whole_request, streamed,
                                    prepared)
                return
            except ProxyError as exc:
                if isinstance(exc, UpstreamConnectError):
                    pool.record_connect_failure(target)
                retryable = isinstance(exc, UpstreamConnectError) or (
                    isinstance(exc, UpstreamBroken) and exc.nothing_received)
                slot.release()  # before counting the targets left to try
                if retryable and may_retry(
                    request.method, response_started=response.started,
                    body_replayable=streamed is None or not streamed.started,
                    attempts=len(tried), other_targets=pool.other_routable(tried),
                ):
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
        streamed: _StreamedBody | None,
        prepared: Prepared | None,
    ) -> None:
        target = slot.target
        connections = self.pool.connections_to(target)
        started_at = self.clock()
        if prepared is not None:
            connection, upstream = prepared  # sent already, when the slot was granted
        else:
            connection, _ = await connections.get()
            upstream = connection.begin(skip_body=request.method == "HEAD")
        try:
            if prepared is None:
                if whole_request is not None:
                    connection.write(whole_request)
                else:
                    assert streamed is not None
                    connection.write(head)
                    await streamed.send(connection, self.read_timeout)

            def release_early(done: UpstreamResponse) -> None:
                # The whole response is buffered: free the connection and the slot now, so
                # the next waiting request goes out in this same loop turn.
                connections.put(connection, done)
                slot.release()

            if upstream.complete:
                release_early(upstream)
            else:
                upstream.on_complete = release_early
            await upstream.read_head(self.read_timeout)
            status = upstream.status
            if status >= 500:
                target.responses_5xx += 1
            response.set_log_fields(target=target.address, target_status=status,
                                    target_time=round(self.clock() - started_at, 6))
            response.start(status, response_headers(upstream.headers))
            while piece := await upstream.read_body(self.read_timeout):
                await response.write(piece)
            await response.end()
        finally:
            upstream.on_complete = None
            connections.put(connection, upstream)


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


async def _read_small_body(body: RequestBody) -> bytes:
    pieces = [piece async for piece in body]
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
