"""In-memory implementations of exchange.py's protocols, and a way to run async tests."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import uvloop

from surge.gateway.exchange import Headers, Request


def run_async(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test on uvloop, as the gateway does, with a hard time limit."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async def bounded() -> None:
            await asyncio.wait_for(test(*args, **kwargs), 60)

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(bounded())

    return wrapper


class FakeBody:
    def __init__(self, chunks: Iterable[bytes] = (), content_length: int | None = 0,
                 delay: float = 0.0) -> None:
        self._chunks = chunks
        self.content_length = content_length
        self.delay = delay
        self.read_started = False

    @property
    def complete(self) -> bool:
        return not self.content_length and not self._chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.read_started = True
        for chunk in self._chunks:
            if self.delay:
                await asyncio.sleep(self.delay)
            yield chunk

    async def read_all(self, limit: int) -> bytes:
        return b"".join([c async for c in self])


def make_request(
    method: str = "GET",
    target: str = "/echo",
    headers: Headers | None = None,
    body: FakeBody | None = None,
    client_host: str = "10.1.2.3",
) -> Request:
    path, _, query = target.partition("?")
    return Request(
        method=method, target=target, path=path, query=query, http_version="1.1",
        headers=headers if headers is not None else [(b"host", b"app.example")],
        body=body or FakeBody(), client_host=client_host, client_port=50000,
        server_port=8443, scheme="https",
    )


class FakeResponse:
    """Records the response. With ``keep_body=False`` only a hash and the size are kept, and
    ``write_delay`` makes a slow client so backpressure is exercised."""

    def __init__(self, keep_body: bool = True, write_delay: float = 0.0) -> None:
        self._started = False
        self.status = 0
        self.headers: Headers = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.ended = False
        self.log_fields: dict[str, object] = {}
        self.keep_body = keep_body
        self.write_delay = write_delay

    @property
    def started(self) -> bool:
        return self._started

    def start(self, status: int, headers: Headers, reason: bytes | None = None) -> None:
        assert not self._started, "response started twice"
        self._started = True
        self.status = status
        self.headers = headers

    async def write(self, data: bytes) -> None:
        assert self._started and not self.ended
        self.size += len(data)
        self.sha256.update(data)
        if self.keep_body:
            self.chunks.append(data)
        if self.write_delay:
            await asyncio.sleep(self.write_delay)

    async def sendfile(self, path: str, offset: int, count: int) -> None:
        raise NotImplementedError

    async def end(self) -> None:
        self.ended = True

    def end_with(self, data: bytes) -> bool:
        assert self._started and not self.ended
        self.size += len(data)
        self.sha256.update(data)
        if self.keep_body and data:
            self.chunks.append(data)
        self.ended = True
        return True

    async def drained(self) -> None:
        return None

    logged = True

    def set_log_fields(self, **fields: object) -> None:
        self.log_fields.update(fields)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)
