"""The proxy in front of Starman running a Perl PSGI app (fails when starman is missing)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson

from .fakes import FakeBody, FakeResponse, make_request, run_async
from .test_proxy import get, proxy, web
from .upstreams import starman


def test_starman_behind_the_proxy(tmp_path: Path) -> None:
    with starman(tmp_path, workers=2) as address:

        @run_async
        async def scenario() -> None:
            async with proxy([address], workers=2, health_check={
                    "path": "/", "interval": "50ms", "timeout": "2s",
                    "unhealthy_threshold": 2}) as service:
                response = await get(service, "/echo", headers=[
                    (b"host", b"legacy.example"), (b"x-forwarded-for", b"198.51.100.1"),
                    (b"connection", b"x-drop"), (b"x-drop", b"1"), (b"accept", b"*/*")])
                assert response.status == 200
                seen = orjson.loads(response.body)
                headers = seen["headers"]
                assert headers["HTTP_HOST"] == "legacy.example"
                assert headers["HTTP_X_FORWARDED_FOR"] == "198.51.100.1, 10.1.2.3"
                assert headers["HTTP_X_REAL_IP"] == "10.1.2.3"
                assert headers["HTTP_X_FORWARDED_PROTO"] == "https"
                assert "HTTP_X_DROP" not in headers

                # keep-alive: sequential requests ride one connection
                opened = web(service)["targets"][address]["connections_opened"]
                for _ in range(10):
                    assert (await get(service)).status == 200
                assert web(service)["targets"][address]["connections_opened"] == opened

                # never more than 2 requests at once on 2 workers: 10 × 0.2 s take ≥ 1 s
                began = time.monotonic()
                slow = await asyncio.gather(*(get(service, "/slow") for _ in range(10)))
                assert [r.status for r in slow] == [200] * 10
                assert time.monotonic() - began >= 0.95
                assert web(service)["queued"] >= 8
                # Starman's 2 workers each hold one of our connections: a third connection
                # would never be served. Checks ran meanwhile, on the pooled connections.
                assert web(service)["targets"][address]["connections_opened"] <= 2
                assert web(service)["healthy_targets"] == 1

                # streaming both ways
                size = 8 * 1024 * 1024
                download = FakeResponse(keep_body=False)
                await service.handler_for("web").handle(
                    make_request("GET", f"/big?size={size}"), download)
                assert download.status == 200 and download.size == size
                upload = FakeResponse()
                body = FakeBody([b"u" * 65536] * 64, content_length=64 * 65536)
                await service.handler_for("web").handle(
                    make_request("POST", "/upload", body=body), upload)
                assert orjson.loads(upload.body)["body_size"] == 64 * 65536

        scenario()
