"""The request body as an async stream with backpressure (``exchange.RequestBody``).

The connection feeds chunks in as httptools parses them; once more than ``BODY_HIGH_WATER``
bytes wait unread, the client socket is paused, and it is resumed when the handler has read
down to ``BODY_LOW_WATER``. So a 1 GiB upload streams through in bounded memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

from surge.gateway.errors import BadRequest, BodyTooLarge
from surge.gateway.http.limits import BODY_HIGH_WATER, BODY_LOW_WATER


class BodyFlow(Protocol):
    """What a body needs from its connection."""

    def pause_body(self) -> None: ...

    def resume_body(self) -> None: ...

    def send_continue(self) -> None: ...


class StreamingBody:
    __slots__ = ("_buffered", "_chunks", "_complete", "_error", "_expect_continue", "_flow",
                 "_paused", "_waiter", "content_length", "received", "touched")

    def __init__(self, content_length: int | None, flow: BodyFlow | None,
                 expect_continue: bool = False, complete: bool = False) -> None:
        self.content_length = content_length
        self.received = 0
        self.touched = False  # the handler started reading
        self._flow = flow
        self._expect_continue = expect_continue
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = complete
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    @staticmethod
    def empty() -> StreamingBody:
        """The body of a request without one: shared, as nothing changes a complete,
        empty body (``finish`` keeps it complete, ``fail`` ignores it, ``feed`` is never
        called for it)."""
        return _EMPTY

    @property
    def complete(self) -> bool:
        """The whole body was received from the client (not necessarily read)."""
        return self._complete

    # The connection's side.

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        self.received += len(data)
        if self._buffered > BODY_HIGH_WATER and not self._paused and self._flow is not None:
            self._paused = True
            self._flow.pause_body()
        self._wake()

    def finish(self) -> None:
        if self.content_length and self.received != self.content_length:
            # The parser ended the message short of its Content-Length (llhttp does for a
            # request asking for an Upgrade): a handler must never take a part for the whole.
            self.fail(BadRequest(f"{self.received} of {self.content_length} body bytes"))
            return
        self._complete = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self._complete:
            self._error = exc
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # The handler's side.

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        self.touched = True
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered <= BODY_LOW_WATER and self._flow is not None:
                    self._paused = False
                    self._flow.resume_body()
                return chunk
            if self._error is not None:
                raise self._error
            if self._complete:
                raise StopAsyncIteration
            if self._expect_continue and self._flow is not None:
                # The client waits for this before sending the body (RFC 9110 10.1.1).
                self._expect_continue = False
                self._flow.send_continue()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def read_all(self, limit: int) -> bytes:
        if self.content_length is not None and self.content_length > limit:
            raise BodyTooLarge(f"body of {self.content_length} bytes is over the limit of {limit}")
        if self._complete and self._error is None:
            # Already all here (a small body comes with its head): no iteration needed.
            return self._take_everything(limit)
        parts: list[bytes] = []
        size = 0
        async for chunk in self:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"body is over the limit of {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def _take_everything(self, limit: int) -> bytes:
        self.touched = True
        if self._buffered > limit:
            raise BodyTooLarge(f"body is over the limit of {limit} bytes")
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._paused and self._flow is not None:
            self._paused = False
            self._flow.resume_body()
        return data


_EMPTY = StreamingBody(0, None, complete=True)
