"""The seam between the gateway's HTTP/1.1 server and its route handlers.

The server (``surge.gateway.http``) parses a request head, builds a ``Request`` whose body
is a stream with backpressure, and calls the matched route's handler with a
``ResponseWriter``. Handlers (proxy, enqueue, static, tasks) never touch sockets or
parsers, so each is testable with in-memory fakes of these two protocols.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

Headers = list[tuple[bytes, bytes]]  # names lower-cased, in received order


class RequestBody(Protocol):
    """The request body as a stream. Reading more resumes the client socket; not reading
    pauses it (backpressure), so a large upload never sits whole in memory."""

    content_length: int | None  # None for chunked bodies

    @property
    def complete(self) -> bool:
        """The whole body was received from the client (not necessarily read)."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def read_all(self, limit: int) -> bytes:
        """The whole body; raises ``surge.gateway.errors.BodyTooLarge`` past ``limit`` bytes."""
        ...


@dataclass(slots=True)
class Request:
    method: str  # "GET"
    target: str  # request target in origin-form, as received: "/echo?x=1"
    path: str  # decoded path without the query: "/echo"
    query: str  # raw query string without "?": "x=1"
    http_version: str  # "1.1" or "1.0"
    headers: Headers
    body: RequestBody
    client_host: str  # peer address of the client connection
    client_port: int
    server_port: int  # local port the client connected to (X-Forwarded-Port)
    scheme: str = "http"  # X-Forwarded-Proto
    keep_alive: bool = True

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class ResponseWriter(Protocol):
    """Writes one response. ``start`` sends the status line and headers: with a
    content-length header the body is sent as is, otherwise chunked (or close-delimited for
    HTTP/1.0). ``write`` waits while the client socket is paused (backpressure)."""

    @property
    def started(self) -> bool:
        """True once any byte of the response went to the client (no retry after that)."""
        ...

    def start(self, status: int, headers: Headers, reason: bytes | None = None) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def sendfile(self, path: str, offset: int, count: int) -> None:
        """Send ``count`` bytes of file ``path`` from ``offset`` (zero-copy where possible)."""
        ...

    async def end(self) -> None: ...

    def end_with(self, data: bytes) -> bool:
        """``write(data)`` and ``end()`` without waiting (a body whole in memory); False when
        the client is not keeping up and ``drained()`` must be awaited."""
        ...

    async def drained(self) -> None: ...

    logged: bool  # the access log records this response; False: skip computing log fields

    def set_log_fields(self, **fields: object) -> None:
        """Extra access-log fields, e.g. ``target="127.0.0.1:5001"``, ``target_time=0.012``."""
        ...


class RouteHandler(Protocol):
    async def handle(self, request: Request, response: ResponseWriter) -> None: ...


class EagerRouteHandler(RouteHandler, Protocol):
    """A handler that can begin inside the parser callback and finish from callbacks, with
    no task per request (the proxy). ``start_now`` returns False to be run by ``handle``
    instead; when it returns True it calls ``done`` exactly once, never before returning,
    with None once the response has ended or with the exception that stopped it."""

    def start_now(self, request: Request, response: ResponseWriter,
                  done: Callable[[BaseException | None], None]) -> bool: ...
