"""A small async HTTP/1.1 client with a keep-alive connection pool per host.

One ``asyncio.Protocol`` per connection feeds an httptools response parser; a connection
carries one request at a time and goes back to its host's idle list when the response says
keep-alive. Whole bodies only (the callers — the SQS client, the admin CLI — send and receive
small JSON documents). Failures raise ``HttpConnectError`` (could not connect, or the
connection broke; ``HttpNotSent`` when the request surely never left) and ``HttpTimeout``;
they leave the caller to decide about retries, except
one safe case handled here: a *reused* idle connection that the server had already closed,
detected before any response byte arrived, is retried once on a fresh connection when the
caller says the request may be repeated (``retry_stale``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools

from surge.errors import SurgeError

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
MAX_RESPONSE_BODY = 64 * 1024 * 1024


class HttpClientError(SurgeError):
    """An HTTP request got no complete response."""

    http_status = 502


class HttpConnectError(HttpClientError):
    """Could not connect, or the connection closed before the response was complete."""


class HttpNotSent(HttpConnectError):
    """No connection could be opened for the request: not one byte of it left, so the
    server did not act on it."""


class HttpTimeout(HttpClientError):
    """No complete response within the request's timeout."""

    http_status = 504


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]  # names lower-cased, in received order
    body: bytes

    def header(self, name: str, default: str | None = None) -> str | None:
        """The last value of header ``name`` (lower-case)."""
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return default


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def from_url(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        default_port = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, parts.hostname, parts.port or default_port)

    @property
    def host_header(self) -> str:
        default_port = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default_port else f"{host}:{self.port}"


class _ResponseProtocol(asyncio.Protocol):
    """One connection: parses one response at a time into ``HttpResponse``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.bytes_received = 0
        self.idle_since = time.monotonic()
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._headers_done = False
        self._head_only = False
        self.keep_alive = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self._waiter is None or self._waiter.done():
            self._close()  # bytes nobody asked for: the connection cannot be trusted
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpConnectError(f"malformed HTTP response: {exc}"))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if self._headers_done and self._reads_until_close():
            self._finish()  # a body delimited by the end of the connection
        else:
            self._fail(HttpConnectError(f"connection closed before the response ended: {exc}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._head_only:
            self.keep_alive = False  # the parser would wait for a body a HEAD response lacks
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > MAX_RESPONSE_BODY:
            self._fail(HttpConnectError(f"response body larger than {MAX_RESPONSE_BODY} bytes"))
            self._close()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self._parser.should_keep_alive()
        self._finish()

    # used by HttpClient
    async def exchange(self, request: bytes, head_only: bool) -> HttpResponse:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._headers, self._body, self._body_size = [], [], 0
        self._headers_done, self._head_only = False, head_only
        self.bytes_received = 0
        self._parser = httptools.HttpResponseParser(self)
        self.transport.write(request)
        return await self._waiter

    def close(self) -> None:
        self._close()

    def _reads_until_close(self) -> bool:
        names = {name for name, _ in self._headers}
        return "content-length" not in names and "transfer-encoding" not in names

    def _finish(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            status = self._parser.get_status_code()
            self._waiter.set_result(HttpResponse(status, self._headers, b"".join(self._body)))

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            with contextlib.suppress(RuntimeError):  # its event loop is already closed
                self.transport.close()


@dataclass
class _HostPool:
    slots: asyncio.Semaphore  # at most max_connections_per_host requests at once
    idle: deque[_ResponseProtocol] = field(default_factory=deque)


class HttpClient:
    """Keep-alive pools per origin. ``request`` returns the whole response or raises."""

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        timeout: float = 30.0,
        max_idle_per_host: int = 64,
        max_connections_per_host: int = 512,
        idle_timeout: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = "surge",
    ) -> None:
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.max_idle_per_host = max_idle_per_host
        # Beyond this, requests wait (within their timeout) rather than open more sockets:
        # file descriptors are a hard limit here and on the server.
        self.max_connections_per_host = max_connections_per_host
        # Idle connections older than this are dropped rather than reused: servers close idle
        # keep-alive connections (commonly after 5 s), and reusing one as it closes loses the
        # request.
        self.idle_timeout = idle_timeout
        self._ssl_context = ssl_context
        self._user_agent = user_agent
        self._pools: dict[Origin, _HostPool] = {}
        self._busy: set[_ResponseProtocol] = set()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        timeout: float | None = None,
        retry_stale: bool | None = None,
    ) -> HttpResponse:
        if self._closed:
            raise HttpNotSent("the HTTP client is closed")
        self._follow_loop()
        origin = Origin.from_url(url)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = self._encode(method, target, origin, headers or [], body)
        may_repeat = method in IDEMPOTENT_METHODS if retry_stale is None else retry_stale
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                return await self._send(origin, request, method == "HEAD", may_repeat)
        except TimeoutError as exc:
            raise HttpTimeout(f"{method} {url}: no response within {limit}s") from exc

    async def _send(self, origin: Origin, request: bytes, head_only: bool,
                    may_repeat: bool) -> HttpResponse:
        async with self._pool(origin).slots:
            return await self._exchange(origin, request, head_only, may_repeat)

    async def _exchange(self, origin: Origin, request: bytes, head_only: bool,
                        may_repeat: bool) -> HttpResponse:
        connection, reused = self._take_idle(origin), True
        if connection is None:
            connection, reused = await self._connect(origin), False
        self._busy.add(connection)
        try:
            try:
                response = await connection.exchange(request, head_only)
            except HttpConnectError:
                if not (reused and may_repeat and connection.bytes_received == 0):
                    raise
                connection.close()
                self._busy.discard(connection)
                try:
                    connection = await self._connect(origin)
                except HttpNotSent as exc:
                    # The first attempt went out on the stale connection: it may have been
                    # acted on before the server closed it.
                    raise HttpConnectError(str(exc)) from exc
                self._busy.add(connection)
                response = await connection.exchange(request, head_only)
        except BaseException:
            connection.close()  # cancelled or failed mid-exchange: the stream state is unknown
            raise
        finally:
            self._busy.discard(connection)
        self._release(origin, connection)
        return response

    def _follow_loop(self) -> None:
        """Connections and semaphores belong to one event loop. A client whose connections
        were all closed may move to a new loop (one ``asyncio.run`` after another); one that
        still holds connections refuses, here and only here, instead of failing obscurely
        inside a dead loop's transport."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None and (self._busy or any(p.idle for p in self._pools.values())):
            raise HttpClientError(
                "this HttpClient holds connections of another event loop; use one per loop"
            )
        self._pools.clear()
        self._loop = loop

    def _pool(self, origin: Origin) -> _HostPool:
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _HostPool(asyncio.Semaphore(self.max_connections_per_host))
        return pool

    def _take_idle(self, origin: Origin) -> _ResponseProtocol | None:
        pool = self._pool(origin)
        stale_before = time.monotonic() - self.idle_timeout
        while pool.idle:
            connection = pool.idle.pop()  # most recently used first: least likely closed
            if connection.closed or connection.idle_since < stale_before:
                connection.close()
                continue
            return connection
        return None

    def _release(self, origin: Origin, connection: _ResponseProtocol) -> None:
        pool = self._pool(origin)
        if (self._closed or not connection.keep_alive or connection.closed
                or len(pool.idle) >= self.max_idle_per_host):
            connection.close()
            return
        connection.idle_since = time.monotonic()
        pool.idle.append(connection)

    async def _connect(self, origin: Origin) -> _ResponseProtocol:
        loop = asyncio.get_running_loop()
        ssl_context = None
        if origin.scheme == "https":
            ssl_context = self._ssl_context or ssl.create_default_context()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    _ResponseProtocol, origin.host, origin.port, ssl=ssl_context
                )
        except TimeoutError as exc:
            raise HttpNotSent(
                f"connect to {origin.host}:{origin.port} timed out after {self.connect_timeout}s"
            ) from exc
        except OSError as exc:
            raise HttpNotSent(f"cannot connect to {origin.host}:{origin.port}: {exc}") from exc
        return protocol

    def _encode(self, method: str, target: str, origin: Origin,
                headers: list[tuple[str, str]], body: bytes) -> bytes:
        names = {name.lower() for name, _ in headers}
        lines = [f"{method} {target} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: {origin.host_header}")
        if "user-agent" not in names:
            lines.append(f"User-Agent: {self._user_agent}")
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            lines.append(f"Content-Length: {len(body)}")
        lines.extend(f"{name}: {value}" for name, value in headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            while pool.idle:
                pool.idle.pop().close()
        for connection in list(self._busy):
            connection.close()
        self._busy.clear()
        await asyncio.sleep(0)  # let the transports run their close callbacks
