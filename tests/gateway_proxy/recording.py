"""A real gateway in this process in front of a backend that records the exact bytes it
receives, and a raw client: what the desync suite (``test_desync.py``) sends attacks
through.

The backend reads what arrives with a strict HTTP/1.1 reading of its own (not httptools,
so it does not share the gateway's parser): a head up to the first CRLFCRLF, then a body
by Content-Length or by chunks. Every complete request is answered ``200 ok``; bytes that
are not a request are kept, so a test sees them, and the connection is closed.
``Recorder.scripts`` gives a target other answers (bytes written and pauses), played one
request at a time per connection, as a pre-fork server like Starman does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from surge.config.settings import AccessLogSettings, Settings
from surge.gateway.exchange import Request, ResponseWriter, RouteHandler
from surge.gateway.http.accesslog import AccessLog
from surge.gateway.http.limits import Limits
from surge.gateway.http.server import GatewayServer
from surge.gateway.proxy import ProxyService
from surge.gateway.routes.health import HealthHandler
from surge.gateway.routes.router import RouteEntry, Router

HEALTH_CHECK = b"GET /health "
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class Malformed(ValueError):
    """Bytes the backend cannot read as an HTTP/1.1 request."""


@dataclass(frozen=True)
class Message:
    """One request as the backend received it: its head, exactly, and its body decoded."""

    head: bytes
    body: bytes
    chunked: bool


def _fields(head: bytes) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        if not line:
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name:
            raise Malformed(f"header line {line[:60]!r}")
        if name.lower() in fields and name.lower() in (b"content-length",
                                                       b"transfer-encoding", b"host"):
            raise Malformed(f"{name!r} twice")
        fields[name.lower()] = value.strip()
    return fields


def _chunked_body(data: bytes, start: int) -> tuple[bytes, int] | None:
    """The decoded body and where the message ends, or None when incomplete."""
    body = bytearray()
    position = start
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            return None
        size_text = data[position:line_end]
        if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            raise Malformed(f"chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        position = line_end + 2
        if size == 0:
            if data[position:position + 2] == b"\r\n":
                return bytes(body), position + 2
            if len(data) < position + 2:
                return None
            raise Malformed("trailer fields (the gateway sends none)")
        if len(data) < position + size + 2:
            return None
        if data[position + size:position + size + 2] != b"\r\n":
            raise Malformed("chunk data not followed by CRLF")
        body += data[position:position + size]
        position += size + 2


def split_requests(data: bytes) -> tuple[list[Message], bytes]:
    """The complete requests at the start of ``data``, and what follows them."""
    messages: list[Message] = []
    while data:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            if b"\r\n" in data and not data.split(b"\r\n", 1)[0].endswith(b" HTTP/1.1"):
                raise Malformed(f"request line {data[:60]!r}")
            return messages, data
        head = data[:head_end + 4]
        if not head.split(b"\r\n", 1)[0].endswith(b" HTTP/1.1"):
            raise Malformed(f"request line {head[:60]!r}")
        fields = _fields(head)
        start = head_end + 4
        if b"transfer-encoding" in fields:
            if b"content-length" in fields or fields[b"transfer-encoding"] != b"chunked":
                raise Malformed("framing")
            decoded = _chunked_body(data, start)
            if decoded is None:
                return messages, data
            body, end = decoded
            messages.append(Message(head, body, True))
        else:
            length_text = fields.get(b"content-length", b"0")
            if not length_text.isdigit():
                raise Malformed(f"content-length {length_text!r}")
            end = start + int(length_text)
            if len(data) < end:
                return messages, data
            messages.append(Message(head, data[start:end], False))
        data = data[end:]
    return messages, data


class RecordingBackend(asyncio.Protocol):
    """One connection of ``Recorder``'s server."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.received = bytearray()
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy_until = 0.0  # a scripted answer is being played until then

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.recorder.connections.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.received += data
        self.buffer += data
        try:
            messages, self.buffer = split_requests(self.buffer)
        except Malformed:
            self.recorder.garbage.append(self.buffer)
            self.transport.close()
            return
        for message in messages:
            if not message.head.startswith(HEALTH_CHECK):
                self.recorder.messages.append(message)
            target = message.head.split(b" ", 2)[1]
            head_only = message.head.startswith(b"HEAD ")
            self._play(self.recorder.scripts.get(target,
                                                 [RESPONSE[:-2] if head_only else RESPONSE]))

    def _play(self, script: Sequence[bytes | float]) -> None:
        loop = asyncio.get_running_loop()
        at = max(self.busy_until, time.monotonic())
        for step in script:
            if isinstance(step, float):
                at += step
            else:
                loop.call_at(loop.time() + at - time.monotonic(), self._write, step)
        self.busy_until = at

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)


class Recorder:
    """The backend: every request it was sent (health checks left out), in arrival order,
    and the bytes that were not a request."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.garbage: list[bytes] = []
        self.connections: list[RecordingBackend] = []  # each with every byte it received
        # request target -> what is written (bytes) and waited (seconds) to answer it
        self.scripts: dict[bytes, Sequence[bytes | float]] = {}
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Recorder:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: RecordingBackend(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def clear(self) -> None:
        self.messages.clear()
        self.garbage.clear()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for connection in self.connections:
                if connection.transport is not None:
                    connection.transport.abort()
            await self.server.wait_closed()


class TaskPath:
    """The proxy's handler without ``start_now``: every request takes the coroutine path,
    as one with a body does."""

    def __init__(self, handler: RouteHandler) -> None:
        self.handler = handler

    async def handle(self, request: Request, response: ResponseWriter) -> None:
        await self.handler.handle(request, response)


@dataclass
class Gateway:
    port: int
    backend: Recorder
    server: GatewayServer
    proxy: ProxyService

    def pool_stats(self) -> dict[str, Any]:
        stats = self.proxy.stats()["web"]
        assert isinstance(stats, dict)
        return stats


@contextlib.asynccontextmanager
async def gateway(eager: bool, methods: Sequence[str] = (),
                  **limits: Any) -> AsyncIterator[Gateway]:
    """``GatewayServer`` on a free port with one proxy route (``/``, ``methods``) to a
    ``Recorder``; ``eager`` False hides the proxy's task-free path."""
    backend = await Recorder().start()
    settings = Settings.model_validate({"pools": {"web": {
        "targets": [backend.address], "health_check": {"path": "/health"}}}})
    proxy = ProxyService(settings, None, processes=1)
    await proxy.start()
    handler = proxy.handler_for("web")
    router = Router([
        RouteEntry("/health", frozenset({"GET", "HEAD"}), HealthHandler(), exact=True),
        RouteEntry("/", frozenset(methods), handler if eager else TaskPath(handler)),
    ])
    server = GatewayServer(Limits(**limits), router,
                           AccessLog(AccessLogSettings(enabled=False)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await server.start(sock)
    try:
        yield Gateway(server.server_port, backend, server, proxy)
    finally:
        await server.shutdown(1.0)
        await proxy.stop(1.0)
        await backend.stop()
        sock.close()


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


def split_responses(data: bytes) -> list[Response]:
    """Every response in ``data`` (Content-Length framed, as the gateway's are here; no
    HEAD among the requests)."""
    responses = []
    while data:
        head, separator, data = data.partition(b"\r\n\r\n")
        assert separator, f"an incomplete response: {head[:200]!r}"
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        # 204 and 304 end at their head, whatever they announce (RFC 9112 §6.3)
        length = 0 if status in (204, 304) else int(headers.get(b"content-length", b"0"))
        body, data = data[:length], data[length:]
        responses.append(Response(status, headers, body))
    return responses


async def exchange(port: int, parts: Sequence[bytes], pause: float = 0.002,
                   timeout: float = 5.0) -> list[Response]:
    """Send ``parts`` in separate writes, then end the sending side, and read every
    response until the gateway closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        with contextlib.suppress(ConnectionResetError):
            for index, part in enumerate(parts):
                if index:
                    await asyncio.sleep(pause)  # a read of its own at the gateway
                writer.write(part)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()
        received = b""
        async with asyncio.timeout(timeout):
            # A gateway that refused a request closes with the client's later bytes unread:
            # the client's stack then answers them with a reset.
            with contextlib.suppress(ConnectionResetError):
                while chunk := await reader.read(65536):
                    received += chunk
        return split_responses(received)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
