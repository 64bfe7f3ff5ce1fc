"""Small whole responses shared by the gateway's own routes."""

from __future__ import annotations

from typing import Any

import orjson

from surge.gateway.exchange import Headers, ResponseWriter


async def send_bytes(response: ResponseWriter, status: int, body: bytes, content_type: bytes,
                     headers: Headers | None = None) -> None:
    response.start(status, [
        (b"content-type", content_type),
        (b"content-length", b"%d" % len(body)),
        *(headers or []),
    ])
    await response.write(body)
    await response.end()


async def send_text(response: ResponseWriter, status: int, text: str,
                    headers: Headers | None = None) -> None:
    await send_bytes(response, status, text.encode(), b"text/plain; charset=utf-8", headers)


async def send_json(response: ResponseWriter, status: int, document: Any,
                    headers: Headers | None = None) -> None:
    await send_bytes(response, status, orjson.dumps(document), b"application/json", headers)
