"""The gateway's proxy route: pools of targets behind keep-alive connections.

``ProxyService`` owns one ``TargetPool`` per configured pool, the background work that
keeps them current (active health checks, following the supervisor's target list,
cutting off targets whose deregistration delay ran out) and hands out a ``RouteHandler``
per proxy route (its pool, and whether it buffers bodies). Parts: ``admission`` (slots and
the wait queue), ``balancing``, ``health``, ``headers`` and ``retry`` are pure;
``upstream`` holds the connections; ``forward`` is the request cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import time
from collections.abc import Callable

from surge.config.settings import ProxyRoute, Settings
from surge.gateway.exchange import RouteHandler
from surge.gateway.proxy.checker import HealthChecker
from surge.gateway.proxy.feed import Entries, TargetsFeed
from surge.gateway.proxy.forward import ProxyHandler
from surge.gateway.proxy.pool import TargetPool
from surge.gateway.proxy.upstream import STREAMING, BodyBuffering
from surge.gateway.spool import TempFiles, prepare_temp_dir, temp_dir_of

__all__ = ["ProxyService"]

log = logging.getLogger("surge.gateway.proxy")

FIRST_TARGETS_WAIT = 5.0  # start() waits this long for the supervisor's first target list
REAP_INTERVAL = 1.0


class ProxyService:
    def __init__(
        self,
        settings: Settings,
        targets_from: str | None,
        *,
        processes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``processes``: how many gateway processes share each target's concurrency limit
        (default: as many as ``surge gateway`` starts for these settings)."""
        self.clock = clock
        self.gateway = settings.gateway
        self.temp_files = TempFiles(temp_dir_of(settings.data_dir))
        if processes is None:
            processes = gateway_processes(settings)
        self.pools = {name: TargetPool(name, pool, clock, processes=processes)
                      for name, pool in settings.pools.items()}
        self.feed = TargetsFeed(targets_from, self._apply_feed) if targets_from else None
        if self.feed is None:
            for pool in self.pools.values():
                pool.set_targets((address, "active") for address in pool.settings.targets)
        self._handlers: dict[ProxyRoute, ProxyHandler] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Make sure the temporary directory works; start health checks, the reaper of
        drained targets and the targets feed; with a feed, wait (briefly) for its first
        answer so the gateway starts with targets."""
        prepare_temp_dir(self.temp_files.directory)
        for pool in self.pools.values():
            self._tasks.append(asyncio.create_task(HealthChecker(pool).run(),
                                                   name=f"health-checks-{pool.name}"))
        self._tasks.append(asyncio.create_task(self._reap(), name="proxy-reaper"))
        if self.feed is not None:
            self._tasks.append(asyncio.create_task(self.feed.run(), name="targets-feed"))
            try:
                async with asyncio.timeout(FIRST_TARGETS_WAIT):
                    await self.feed.first_answer.wait()
            except TimeoutError:
                log.warning("no target list from %s:%d after %gs; starting without targets",
                            self.feed.host, self.feed.port, FIRST_TARGETS_WAIT)

    def handler_for(self, route: ProxyRoute | str) -> RouteHandler:
        """The handler of a proxy route (or of a pool name, with the default options);
        routes with the same options share one."""
        if isinstance(route, str):
            route = ProxyRoute(pool=route)
        handler = self._handlers.get(route)
        if handler is None:
            gateway = self.gateway
            handler = self._handlers[route] = ProxyHandler(
                self.pools[route.pool], self.clock,
                body_memory=gateway.body_buffer_size if route.request_buffering else None,
                temp_files=self.temp_files,
                response_buffering=BodyBuffering(
                    gateway.response_buffer_size, gateway.response_max_temp_file_size,
                    self.temp_files if gateway.response_max_temp_file_size else None)
                if route.response_buffering else STREAMING)
        return handler

    async def stop(self, timeout: float) -> None:
        """Stop the background work, let in-flight requests finish for up to ``timeout``
        seconds, then close every upstream connection."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        deadline = self.clock() + timeout
        while self.clock() < deadline and any(
            t.in_flight for pool in self.pools.values() for t in pool.targets
        ):
            await asyncio.sleep(0.05)
        for pool in self.pools.values():
            pool.close()
        self.temp_files.close()

    def stats(self) -> dict[str, object]:
        """Counters per pool and per target, for the metrics endpoint."""
        return {name: pool.stats() for name, pool in self.pools.items()}

    def _apply_feed(self, entries: Entries) -> None:
        for name, pool in self.pools.items():
            pool.set_targets(entries.get(name, []))

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            for pool in self.pools.values():
                pool.reap()


def gateway_processes(settings: Settings) -> int:
    """The number of processes ``surge gateway`` runs for ``settings`` (its own plan)."""
    from surge.gateway.process import plan_processes

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = soft if soft != resource.RLIM_INFINITY else 1 << 20
    gateway = settings.gateway
    return plan_processes(gateway.processes, gateway.max_connections, os.cpu_count() or 1,
                          nofile).processes
