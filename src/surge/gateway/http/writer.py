"""One response on a connection (``exchange.ResponseWriter``).

The head is held until the first body write (or ``end``) so a small response leaves in one
send. With a ``content-length`` header the body goes as is; otherwise it is chunked on
HTTP/1.1 and close-delimited on HTTP/1.0. HEAD responses carry the head only.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from surge.gateway.http.body import StreamingBody

from surge.gateway.errors import ClientDisconnected
from surge.gateway.http.responses import MANAGED_BY_SERVER, SERVER_HEADER, status_line

Headers = list[tuple[bytes, bytes]]
_SENDFILE_CHUNK = 256 * 1024


class WriteFlow(Protocol):
    """What a response needs from its connection."""

    @property
    def date_header(self) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    @property
    def writing_paused(self) -> bool:
        """The client is not keeping up: wait for ``drain`` before writing more."""
        ...

    async def sendfile(self, fd: int, offset: int, count: int) -> None: ...


class ResponseStream:
    __slots__ = ("_body", "_chunked", "_flow", "_head", "_http11", "body_bytes", "ended",
                 "head_only", "keep_alive", "log_fields", "logged", "sent", "started",
                 "status")

    def __init__(self, flow: WriteFlow, http11: bool, head_only: bool, keep_alive: bool,
                 body: StreamingBody | None = None, logged: bool = True) -> None:
        self._flow = flow
        self._body = body
        self._http11 = http11
        self.head_only = head_only
        self.keep_alive = keep_alive
        self._chunked = False
        self._head: bytes | None = None
        self.started = False  # start() was called
        self.sent = False  # a byte of the response was handed to the transport
        self.ended = False
        self.status = 0
        self.body_bytes = 0
        self.log_fields: dict[str, object] = {}
        self.logged = logged

    def start(self, status: int, headers: Headers, reason: bytes | None = None) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        self.status = status
        parts = [status_line(status, reason), SERVER_HEADER, self._flow.date_header]
        has_length = False
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                has_length = True
            elif lower in MANAGED_BY_SERVER:
                if lower == b"connection" and b"close" in value.lower():
                    self.keep_alive = False
                continue
            parts += (name, b": ", value, b"\r\n")
        bodiless = status < 200 or status in (204, 304) or self.head_only
        if not has_length and not bodiless:
            if self._http11:
                self._chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False  # close-delimited
        self._head = b"".join(parts)

    def _take_head(self) -> bytes:
        """The held-back head, finished with its connection header now that we know more:
        a request body the handler never read ends the connection (its framing is lost)."""
        if not self.started:
            raise RuntimeError("start() must be called before the body")
        head, self._head = self._head, None
        self.sent = True
        if head is None:
            return b""
        body = self._body
        if body is not None and not body.complete and not body.touched:
            self.keep_alive = False
        if not self.keep_alive:
            return head + b"connection: close\r\n\r\n"
        if not self._http11:
            return head + b"connection: keep-alive\r\n\r\n"
        return head + b"\r\n"

    async def write(self, data: bytes) -> None:
        if self.ended:
            raise RuntimeError("response already ended")
        wire = self._encode(data, last=False)
        if wire:
            self._flow.write(wire)
        if data and not self.head_only:
            await self._flow.drain()

    def _encode(self, data: bytes, *, last: bool) -> bytes:
        """The held-back head (once), ``data`` framed for the wire, and with ``last`` the
        end of a chunked body."""
        head = self._take_head()
        if self.head_only:
            return head
        self.body_bytes += len(data)
        if not self._chunked:
            return head + data if head else data
        body = b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        return head + body + (b"0\r\n\r\n" if last else b"")

    async def sendfile(self, path: str, offset: int, count: int) -> None:
        head = self._take_head()
        if head:
            self._flow.write(head)
        if self.head_only or count <= 0:
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            if self._chunked:
                await self._copy_chunked(fd, offset, count)
            else:
                await self._flow.sendfile(fd, offset, count)
                self.body_bytes += count
        finally:
            os.close(fd)

    async def _copy_chunked(self, fd: int, offset: int, count: int) -> None:
        while count > 0:
            data = os.pread(fd, min(count, _SENDFILE_CHUNK), offset)
            if not data:
                raise ClientDisconnected("file shrank while being sent")
            await self.write(data)
            offset += len(data)
            count -= len(data)

    async def end(self) -> None:
        if self.ended:
            return
        wire = self._encode(b"", last=True)
        if wire:
            self._flow.write(wire)
        self.ended = True
        await self._flow.drain()

    def end_with(self, data: bytes) -> bool:
        """``write(data)`` and ``end()`` in one send, without waiting: for a body already
        whole in memory. False when the client is not keeping up, so the caller awaits
        ``drained()`` before the connection takes on another response."""
        if self.ended:
            raise RuntimeError("response already ended")
        wire = self._encode(data, last=True)
        if wire:
            self._flow.write(wire)
        self.ended = True
        return not self._flow.writing_paused

    async def drained(self) -> None:
        await self._flow.drain()

    def set_log_fields(self, **fields: object) -> None:
        self.log_fields.update(fields)
