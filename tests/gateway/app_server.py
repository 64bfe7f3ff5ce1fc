"""A GatewayServer with test handlers, run as its own process so tests talk to it over real
sockets and can measure its memory: ``python app_server.py '{"max_header_size": 1024, …}'``.
Prints ``{"event": "listening", "port": N}`` and serves until SIGTERM.

Routes: /health (fast path), /echo (echoes the body, chunked), /discard (reads and counts
the body), /slow (answers after 0.3 s), /stream (a chunked response of N chunks),
/ignore-body (answers without reading the body).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

import orjson
import uvloop

from surge.config.settings import AccessLogSettings
from surge.gateway.exchange import Request, ResponseWriter
from surge.gateway.http.accesslog import AccessLog
from surge.gateway.http.limits import Limits
from surge.gateway.http.server import GatewayServer
from surge.gateway.routes.health import HealthHandler
from surge.gateway.routes.replies import send_text
from surge.gateway.routes.router import RouteEntry, Router


class Echo:
    async def handle(self, request: Request, response: ResponseWriter) -> None:
        response.start(200, [(b"content-type", b"application/octet-stream")])
        async for chunk in request.body:
            await response.write(chunk)
        await response.end()


class Discard:
    async def handle(self, request: Request, response: ResponseWriter) -> None:
        total = 0
        async for chunk in request.body:
            total += len(chunk)
        await send_text(response, 200, str(total))


class Slow:
    async def handle(self, request: Request, response: ResponseWriter) -> None:
        await asyncio.sleep(0.3)
        await send_text(response, 200, "slow " + request.query)


class Stream:
    async def handle(self, request: Request, response: ResponseWriter) -> None:
        response.start(200, [(b"content-type", b"text/plain")])
        for index in range(int(request.query or "3")):
            await response.write(b"chunk %d\n" % index)
        await response.end()


class IgnoreBody:
    async def handle(self, request: Request, response: ResponseWriter) -> None:
        await send_text(response, 200, "ignored")


async def main(options: dict[str, object]) -> None:
    limits = Limits(**options)  # type: ignore[arg-type]
    router = Router([
        RouteEntry("/health", frozenset({"GET", "HEAD"}), HealthHandler(), exact=True),
        RouteEntry("/echo", frozenset(), Echo()),
        RouteEntry("/discard", frozenset(), Discard()),
        RouteEntry("/slow", frozenset(), Slow()),
        RouteEntry("/stream", frozenset(), Stream()),
        RouteEntry("/ignore-body", frozenset(), IgnoreBody()),
    ])
    server = GatewayServer(limits, router, AccessLog(AccessLogSettings(enabled=False)))
    sock = socket.socket()
    sock.bind(("0.0.0.0", 0))
    sock.listen(4096)
    await server.start(sock)
    print(orjson.dumps({"event": "listening", "port": sock.getsockname()[1]}).decode(), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.shutdown(5.0)


if __name__ == "__main__":
    uvloop.run(main(orjson.loads(sys.argv[1]) if len(sys.argv) > 1 else {}))
