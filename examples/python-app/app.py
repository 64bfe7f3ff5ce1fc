"""The Python example app: a plain ASGI application (served by granian in the default config).

``GET /`` answers a page; ``GET /echo`` answers the request headers it received as JSON, which
shows what the gateway adds (X-Forwarded-For, X-Real-IP, …) and keeps (Host).
"""

from __future__ import annotations

import json
import os
from typing import Any

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>surge example</title>
<link rel="stylesheet" href="/static/style.css"></head>
<body><h1>Hello from the surge Python example</h1>
<p>This page came from the app pool; <a href="/static/style.css">/static/</a> is served by
the gateway, <code>POST /images</code> is queued for a worker.</p></body></html>
"""


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await _drain_body(receive)
    path = scope["path"]
    if path == "/":
        await _respond(send, 200, PAGE, "text/html; charset=utf-8")
    elif path == "/echo":
        headers = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope["headers"]}
        document = {
            "method": scope["method"],
            "path": path,
            "query": scope["query_string"].decode("latin-1"),
            "headers": headers,
            "pid": os.getpid(),
        }
        await _respond(send, 200, json.dumps(document).encode(), "application/json")
    else:
        await _respond(send, 404, b"not found\n", "text/plain; charset=utf-8")


async def _drain_body(receive: Any) -> None:
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)


async def _respond(send: Any, status: int, body: bytes, content_type: str) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
