"""Active health checks: every ``interval``, a GET of ``path`` on a fresh connection to
each target; a status among ``success_codes`` within ``timeout`` passes."""

from __future__ import annotations

import asyncio
import logging

from surge.gateway.proxy.balancing import Target
from surge.gateway.proxy.errors import ProxyError
from surge.gateway.proxy.health import SuccessCodes
from surge.gateway.proxy.pool import TargetPool

log = logging.getLogger("surge.gateway.proxy")


class HealthChecker:
    def __init__(self, pool: TargetPool) -> None:
        self.pool = pool
        self.settings = pool.settings.health_check
        self.success_codes = SuccessCodes(self.settings.success_codes)

    async def run(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self.settings.interval)

    async def check_all(self) -> None:
        targets = [t for t in self.pool.targets if t not in self.pool.leaving]
        results = await asyncio.gather(*(self.check(t) for t in targets))
        for target, passed in zip(targets, results, strict=True):
            if target in self.pool.targets:  # it may have left during the check
                self.pool.record_check(target, passed)

    async def check(self, target: Target) -> bool:
        timeout = self.settings.timeout
        try:
            async with asyncio.timeout(timeout):
                # Within the target's slot limit, on a pooled connection: a pre-fork server
                # whose workers all hold our connections would never accept a new one.
                await self.pool.acquire_for_check(target)
                try:
                    status = await self._get(target, timeout)
                finally:
                    self.pool.release(target)
        except (ProxyError, OSError, TimeoutError) as exc:
            log.debug("health check of %s failed: %s", target.address, exc)
            return False
        return status in self.success_codes

    async def _get(self, target: Target, timeout: float) -> int:
        connections = self.pool.connections_to(target)
        connection, _ = await connections.get()
        response = connection.begin(skip_body=False)
        try:
            connection.write(self._request(target))
            await response.read_head(timeout)
            while await response.read_body(timeout):
                pass
            return response.status
        finally:
            connections.put(connection, response)

    def _request(self, target: Target) -> bytes:
        return (f"GET {self.settings.path} HTTP/1.1\r\nHost: {target.address}\r\n"
                "User-Agent: surge-health-check\r\n\r\n").encode("latin-1")
