"""Active health checks: every ``interval``, a GET of ``path`` on a fresh connection to
each target; a status among ``success_codes`` within ``timeout`` passes."""

from __future__ import annotations

import asyncio
import logging

from surge.gateway.proxy.balancing import Target
from surge.gateway.proxy.errors import ProxyError
from surge.gateway.proxy.health import SuccessCodes
from surge.gateway.proxy.pool import TargetPool
from surge.gateway.proxy.upstream import fetch

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
        try:
            status, _ = await fetch(target.host, target.port, self.settings.path,
                                    timeout=self.settings.timeout)
        except (ProxyError, OSError, TimeoutError) as exc:
            log.debug("health check of %s failed: %s", target.address, exc)
            return False
        return status in self.success_codes
