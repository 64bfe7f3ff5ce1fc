"""Connections to targets: one asyncio Protocol per connection, httptools for responses.

An ``UpstreamConnection`` carries one request at a time and is reused while the target
keeps it alive. Response bodies are handed over in pieces as they arrive. What the client
has not taken yet waits as its ``BodyBuffering`` says: buffered (nginx's proxy_buffering),
in memory up to a limit and then in a temporary file, so the target is done with the
response as soon as it has sent it, whatever the client's speed; streamed, or past the
temporary file's limit, reading from the target pauses until the client catches up, so a
1 GiB download never sits in memory. Waits (for the head, for body data, for the target
to take our writes) end with ``UpstreamTimeout`` after the caller's timeout.

A connection carries nothing more after a response that may have no body (the answer to
HEAD, 204, 304) but might be followed by one anyway, and is closed when the target sends
bytes no request asked for (after a response's end, a 1xx announcing a body, a 101 to a
request that asked for no Upgrade): reused, it would hand them to the next request as the
start of its response. ``ConnectionPool.out_of_step`` counts those.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools

from surge.gateway.errors import TempFileError
from surge.gateway.exchange import Headers
from surge.gateway.proxy.errors import (
    ProxyError,
    UpstreamBroken,
    UpstreamConnectError,
    UpstreamTimeout,
)
from surge.gateway.proxy.headers import CONNECTION_SPECIFIC, connection_tokens
from surge.gateway.spool import TempFile, TempFiles

log = logging.getLogger("surge.gateway.proxy")

BODY_HIGH_WATER = 256 * 1024
# What one read of a response's temporary file hands to the client.
TEMP_FILE_READ_SIZE = 256 * 1024
# Not forwarded to the client: hop-by-hop headers, and Date and Server, which the gateway
# writes itself (as nginx does).
_NOT_FORWARDED = CONNECTION_SPECIFIC | {b"date", b"server"}


@dataclass(frozen=True, slots=True)
class BodyBuffering:
    """Where a response body waits for the client: ``memory`` bytes in memory, then a
    temporary file from ``temp_files`` of up to ``temp_file`` bytes (0: none). Reading from
    the target pauses past both, until the client has taken what waits."""

    memory: int
    temp_file: int = 0
    temp_files: TempFiles | None = None


# Today's streaming: the target waits while more than BODY_HIGH_WATER is unread.
STREAMING = BodyBuffering(BODY_HIGH_WATER)


class UpstreamResponse:
    """One response as it arrives on a connection: head, body pieces, end or error. It
    outlives its turn on the connection, so a finished response can still be read while
    the connection already carries the next request."""

    # Slots: one of these per proxied request; they make creating it and reading it cheaper.
    __slots__ = ("_body", "_body_size", "_file", "_file_read", "_waiter", "buffering",
                 "complete", "connection", "connection_named", "error", "framed", "head_done",
                 "headers", "keep_alive", "listener", "on_complete", "received_any",
                 "skip_body", "status", "until_close")

    def __init__(self, connection: UpstreamConnection, skip_body: bool,
                 buffering: BodyBuffering) -> None:
        self.connection = connection
        self.buffering = buffering
        self.status = 0
        # The headers for the client, names lower-cased: hop-by-hop ones (the fixed list and
        # those the target's Connection header names), Date and Server are left out.
        self.headers: Headers = []
        self.connection_named: set[bytes] | None = None
        self.head_done = False
        self.complete = False
        self.keep_alive = True
        self.received_any = False
        self.error: ProxyError | None = None
        self.skip_body = skip_body  # a HEAD response: headers announce a body never sent
        self.until_close = False  # neither Content-Length nor chunked: body ends at EOF
        self.framed = False  # Content-Length or Transfer-Encoding seen among the headers
        self.on_complete: Callable[[UpstreamResponse], None] | None = None
        # Called instead of waking a waiter when nobody awaits this response: the proxy's
        # task-free path follows the response from callbacks (see forward.py).
        self.listener: Callable[[UpstreamResponse], None] | None = None
        # The body not yet taken: the pieces in memory come first, then the temporary
        # file from _file_read on (while the file holds some, new pieces join it).
        self._body: list[bytes] = []
        self._body_size = 0
        self._file: TempFile | None = None
        self._file_read = 0
        self._waiter: asyncio.Future[None] | None = None

    async def read_head(self, timeout: float) -> None:
        while not self.head_done:
            self._raise_if_failed()
            await self._wait(timeout, "responding")
        if self.error is not None:
            raise self.error

    async def read_body(self, timeout: float) -> bytes:
        """The next piece of the body, b"" at its end."""
        while True:
            if self._body:
                data = self._take_memory()
            elif self._file is not None and self._file_read < self._file.size:
                data = self._take_from_file(TEMP_FILE_READ_SIZE)
            elif self.complete:
                return b""
            else:
                self._raise_if_failed()
                await self._wait(timeout, "sending the response body")
                continue
            if not self.complete and not self._over_limit():
                self.connection.resume_reading()
            return data

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error
        if self.connection.closed:
            raise UpstreamBroken("the target closed the connection",
                                 nothing_received=not self.received_any,
                                 reused=self.connection.requests_begun > 1)

    @property
    def body_buffered(self) -> int:
        """Bytes of the body received and not yet taken."""
        if self._file is None:
            return self._body_size
        return self._body_size + self._file.size - self._file_read

    def add_body(self, piece: bytes) -> bool:
        """Keep ``piece`` for the client; True when reading from the target must pause
        until the client has taken some (``BodyBuffering``'s limits are reached)."""
        file = self._file
        if file is None or file.size == self._file_read:  # nothing waits in the file
            size = self._body_size + len(piece)
            buffering = self.buffering
            if size <= buffering.memory or buffering.temp_files is None:
                self._body.append(piece)
                self._body_size = size
                return size > buffering.memory
            if file is None:
                file = self._file = buffering.temp_files.new()
        file.append(piece)
        return file.size >= self.buffering.temp_file

    def _over_limit(self) -> bool:
        """What waits keeps the target paused: a temporary file that reached its limit
        (it takes more once emptied), or memory past its limit with no file to go to."""
        if self._file is not None and self._file.size >= self.buffering.temp_file:
            return True
        return self._body_size > self.buffering.memory

    def _take_memory(self) -> bytes:
        data = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body.clear()
        self._body_size = 0
        return data

    def _take_from_file(self, count: int) -> bytes:
        file = self._file
        assert file is not None
        data = file.read(self._file_read, count)
        self._file_read += len(data)
        if self._file_read >= file.size:
            file.clear()  # all taken: the next pieces go to memory first again
            self._file_read = 0
        return data

    def close_file(self) -> None:
        """Give back the temporary file (the body is not wanted any more, or was taken)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._file_read = 0

    @property
    def reusable(self) -> bool:
        """The connection may carry another request after this response."""
        return self.complete and self.keep_alive and self.error is None

    async def _wait(self, timeout: float, what: str) -> None:
        # One future and one timer per wait: cheaper than asyncio.wait_for on the hot path.
        loop = self.connection.loop
        waiter = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(timeout, _expire, waiter, what, timeout)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif self.listener is not None:
            self.listener(self)

    def take_body(self) -> bytes:
        """Everything received of the body so far, at once."""
        data = self._take_memory()
        if self._file is not None:
            data += self._take_from_file(self._file.size)
            self.close_file()
        return data


class UpstreamConnection(asyncio.Protocol):
    """One connection to a target, carrying one request at a time."""

    __slots__ = ("_informational", "_parser", "_reading_paused", "_transport",
                 "_write_paused", "closed", "loop", "pool", "requests_begun", "response")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._write_paused = False
        self._reading_paused = False
        self.closed = False
        self.response: UpstreamResponse | None = None  # the one being received
        self._informational = False
        self.requests_begun = 0  # more than one: kept alive and reused
        self.pool: ConnectionPool | None = None  # counts it out of step (None: health checks)

    # --- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response.complete:
            self._out_of_step()  # bytes after the response's end that no request asked for
            return
        response.received_any = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._refuse(response, exc)
        if response.complete:
            self._finish_response(response)
        response.wake()

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is None:
            return
        if not response.complete and response.error is None:
            if response.head_done and response.until_close:
                response.complete = True
                response.keep_alive = False
                self._finish_response(response)
            else:
                response.error = UpstreamBroken(
                    "the target closed the connection"
                    + (" before responding" if not response.received_any else " mid-response"),
                    nothing_received=not response.received_any,
                    reused=self.requests_begun > 1,
                )
        response.wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.response is not None:
            self.response.wake()

    # --- httptools callbacks ----------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.response
        assert response is not None
        name = name.lower()
        if name == b"content-length":
            response.framed = True  # noted here: no second pass over the headers later
        elif name in _NOT_FORWARDED or name.startswith(b"proxy-"):
            if name == b"transfer-encoding":
                response.framed = True
            elif name == b"connection":
                named = connection_tokens(value)
                response.connection_named = named if response.connection_named is None \
                    else response.connection_named | named
            return
        response.headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        if response.head_done:
            # A second response to one request, in the read that completed the first.
            response.error = UpstreamBroken("the target sent a second response to one request")
            raise response.error
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            if response.framed or status == 101:
                # A 1xx ends at its head (RFC 9110 §15.2): llhttp would read the body one
                # announces into the final response's. And the gateway forwards no Upgrade.
                response.error = UpstreamBroken(
                    f"the target sent a {status} response"
                    + (" announcing a body" if response.framed else " to no Upgrade"))
                self._out_of_step()
                raise response.error
            # 100 Continue and friends: not the response; llhttp completes them on its own.
            self._informational = True
            response.headers = []
            response.connection_named = None
            response.framed = False
            return
        named = response.connection_named
        if named:
            response.headers = [(n, v) for n, v in response.headers if n not in named]
        response.status = status
        response.head_done = True
        response.keep_alive = self._parser.should_keep_alive()
        if response.skip_body or status == 204 or status == 304:
            # The answer to HEAD, a 204 or a 304: no body may follow (RFC 9112 §6.3), but a
            # server may send one anyway: Starman writes whatever body a PSGI app returns,
            # with any status, in a write of its own after the head. Reused, the connection
            # would hand those bytes to the next request's response, so it carries nothing
            # more: bytes that still come find no response waiting and close it.
            response.complete = True
            response.keep_alive = False
            if status == 204 and response.framed:  # a length a 204 may not announce
                response.headers = [f for f in response.headers if f[0] != b"content-length"]
            return
        if not response.framed:
            response.until_close = True
            response.keep_alive = False

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        try:
            pause = response.add_body(body)
        except TempFileError as exc:
            log.error("%s; the response is cut off", exc)
            response.error = UpstreamBroken(str(exc))
            raise  # stops the parser; data_received closes the connection
        if pause and not self._reading_paused:
            self._reading_paused = True
            if self._transport is not None:
                self._transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        assert self.response is not None
        self.response.complete = True

    # --- what the request cycle calls -------------------------------------------------
    def begin(self, skip_body: bool, buffering: BodyBuffering = STREAMING) -> UpstreamResponse:
        """Start the next request on this connection; its response will arrive here."""
        self.requests_begun += 1
        self.response = UpstreamResponse(self, skip_body, buffering)
        return self.response

    def write(self, data: bytes) -> None:
        if self.closed or self._transport is None or self._transport.is_closing():
            response = self.response
            raise (response.error if response is not None and response.error else None) or \
                UpstreamBroken("the target closed the connection",
                               nothing_received=response is None or not response.received_any,
                               reused=self.requests_begun > 1)
        self._transport.write(data)

    async def drain(self, timeout: float) -> None:
        response = self.response
        assert response is not None
        while self._write_paused and not self.closed:
            await response._wait(timeout, "accepting the request body")
        if self.closed and not response.complete:
            response._raise_if_failed()

    def resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None and not self.closed:
            self._reading_paused = False
            self._transport.resume_reading()

    def _finish_response(self, response: UpstreamResponse) -> None:
        # The whole response is here (in memory or its temporary file): the target and the
        # connection are free for the next request now, before the task that asked for it
        # even wakes up, and whatever the client's speed (see forward.py). A connection
        # that cannot carry another request is closed by the hook (ConnectionPool.put).
        self.resume_reading()
        if response.on_complete is not None:
            hook, response.on_complete = response.on_complete, None
            hook(response)

    def _refuse(self, response: UpstreamResponse,
                exc: httptools.HttpParserError | httptools.HttpParserUpgrade) -> None:
        """llhttp stopped at bytes that are no valid response: those that follow a complete
        one in the same read leave it whole but end the connection."""
        if response.complete:
            response.keep_alive = False
            self._out_of_step()
            return
        if response.error is None:
            response.error = UpstreamBroken(f"invalid response from the target: {exc}")
        self.close()

    def _out_of_step(self) -> None:
        """The target sent what no request asked for: count it and drop the connection."""
        if self.pool is not None:
            self.pool.out_of_step += 1
        self.close()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()


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
        self.out_of_step = 0  # connections closed for bytes no request asked for

    async def get(self, *, fresh: bool = False) -> tuple[UpstreamConnection, bool]:
        """A connection and whether it was reused; ``fresh``: a new one in any case."""
        idle = None if fresh else self.take_idle()
        if idle is not None:
            return idle, True
        connection = await open_connection(self.host, self.port, self.connect_timeout)
        connection.pool = self
        self.opened += 1
        self.in_use.add(connection)
        return connection, False

    def take_idle(self) -> UpstreamConnection | None:
        """An idle connection at once, or None (never opens one)."""
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                self.in_use.add(connection)
                self.reused += 1
                return connection
        return None

    def put(self, connection: UpstreamConnection, response: UpstreamResponse | None) -> None:
        """Return a connection after its request: kept if reusable and room is left."""
        if connection not in self.in_use or (
                response is not None and connection.response is not response):
            return  # given back when its response completed, maybe carrying another already
        self.in_use.discard(connection)
        if (response is not None and response.reusable and not connection.closed
                and connection.response is response and len(self.idle) < self.max_idle):
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
    host: str, port: int, path: str, *, timeout: float, host_header: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> tuple[int, bytes]:
    """One GET on a fresh connection (health checks, the targets feed): status and body."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    async with asyncio.timeout(timeout):
        connection = await open_connection(host, port, timeout)
        try:
            response = connection.begin(False)
            connection.write(
                f"GET {path} HTTP/1.1\r\nHost: {host_header or f'{host}:{port}'}\r\n"
                f"User-Agent: surge-gateway\r\n{extra}Connection: close\r\n\r\n"
                .encode("latin-1")
            )
            await response.read_head(timeout)
            pieces = []
            while piece := await response.read_body(timeout):
                pieces.append(piece)
            return response.status, b"".join(pieces)
        finally:
            connection.close()
