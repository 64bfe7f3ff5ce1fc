"""``/health``: answered by the gateway itself. The HTTP server answers it without a task
when it is not logged (``GatewayServer.health_fast_path``); this handler serves it otherwise
(when the access log wants it)."""

from __future__ import annotations

from surge.gateway.exchange import Request, ResponseWriter
from surge.gateway.routes.replies import send_text

HEALTH_PATH = "/health"


class HealthHandler:
    async def handle(self, request: Request, response: ResponseWriter) -> None:
        await send_text(response, 200, "OK")
