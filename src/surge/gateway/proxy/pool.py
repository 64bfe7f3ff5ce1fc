"""One pool's targets at run time: slots, waiting, connections, health, draining.

This is the glue between the pure parts (``admission``, ``balancing``, ``health``) and
the event loop: it turns a wait in the admission queue into an awaitable with a deadline,
and keeps one ``ConnectionPool`` per target. Targets come and go through ``set_targets``;
one that leaves stops taking requests at once and is dropped when its last in-flight
request is done, or cut off after ``deregistration_delay``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import cast

from surge.config.settings import PoolSettings
from surge.gateway.proxy.admission import Admission, Waiter
from surge.gateway.proxy.balancing import Target, make_balancer, routable
from surge.gateway.proxy.errors import NoCapacity, ProxyError
from surge.gateway.proxy.health import HealthChange, TargetHealth
from surge.gateway.proxy.upstream import (
    STREAMING,
    BodyBuffering,
    ConnectionPool,
    UpstreamConnection,
    UpstreamResponse,
)

log = logging.getLogger("surge.gateway.proxy")

# A request already sent on a pooled connection when its slot was granted.
Prepared = tuple[UpstreamConnection, UpstreamResponse]

# How often the deadlines of requests waiting for a slot are checked: queue_timeout is
# kept to within this.
QUEUE_SWEEP_INTERVAL = 0.05

# How long a target that refused a connection gets no traffic (nginx's fail_timeout).
PASSIVE_EJECTION_TIME = 10.0


@dataclass(slots=True)
class PoolCounters:
    """What the gateway itself answered instead of a target, and why."""

    queued: int = 0  # requests that had to wait for a slot
    rejected_queue_full: int = 0  # 503
    rejected_queue_timeout: int = 0  # 503
    rejected_no_targets: int = 0  # 503
    gateway_502: int = 0
    gateway_504: int = 0
    retries: int = 0


class TargetPool:
    def __init__(
        self, name: str, settings: PoolSettings, clock: Callable[[], float],
        *, processes: int = 1,
    ) -> None:
        self.name = name
        self.settings = settings
        self.clock = clock
        # The limit holds for the whole gateway, so each of its processes takes a share. A
        # Starman worker serves one connection at a time: a connection beyond its worker
        # count sits unserved in its backlog, so rounding down is the only safe way.
        gateway_limit = settings.max_concurrency_per_target or settings.workers
        self.limit = max(1, gateway_limit // processes)
        if gateway_limit < processes:
            log.warning("pool %s: %d gateway processes but a limit of %d per target: each "
                        "process still sends 1, so a target may get %d at once", name,
                        processes, gateway_limit, processes)
        self.admission = Admission(make_balancer(settings.balancing),
                                   settings.max_queued_requests)
        self.connections: dict[Target, ConnectionPool] = {}
        self.leaving: set[Target] = set()  # removed from the target list, still draining
        self.counters = PoolCounters()
        self._sweep: asyncio.TimerHandle | None = None  # the deadline check of the line

    # --- targets --------------------------------------------------------------------
    @property
    def targets(self) -> list[Target]:
        return self.admission.targets

    def find(self, address: str) -> Target | None:
        for target in self.admission.targets:
            if target.address == address:
                return target
        return None

    def set_targets(self, entries: Iterable[tuple[str, str]]) -> None:
        """The full list of targets as ``(address, "active"|"draining")``. New ones start
        taking requests, missing ones drain and go."""
        now = self.clock()
        wanted = dict(entries)
        for address, state in wanted.items():
            target = self.find(address)
            if target is None:
                health = TargetHealth(self.settings.health_check.healthy_threshold,
                                      self.settings.health_check.unhealthy_threshold)
                target = Target.parse(address, self.limit, health)
                self.admission.targets.append(target)
                self.connections[target] = ConnectionPool(
                    target.host, target.port, max_idle=self.settings.keepalive_per_target,
                    connect_timeout=self.settings.connect_timeout)
                log.info("pool %s: target %s added (%s)", self.name, address, state)
            elif target in self.leaving:
                self.leaving.discard(target)
                log.info("pool %s: target %s is back", self.name, address)
            draining = state == "draining"
            if draining and not target.draining:
                target.drain_deadline = now + self.settings.deregistration_delay
                log.info("pool %s: target %s draining", self.name, address)
            target.draining = draining
        for target in list(self.admission.targets):
            if target.address not in wanted and target not in self.leaving:
                self._start_leaving(target, now)
        self.admission.pump(now)

    def _start_leaving(self, target: Target, now: float) -> None:
        if not target.draining:
            target.draining = True
            target.drain_deadline = now + self.settings.deregistration_delay
        self.leaving.add(target)
        log.info("pool %s: target %s deregistering (%d in flight)", self.name, target.address,
                 target.in_flight)
        self._drop_if_drained(target)

    def _drop_if_drained(self, target: Target) -> None:
        if target in self.leaving and target.in_flight == 0:
            self._remove(target)

    def _remove(self, target: Target) -> None:
        self.leaving.discard(target)
        if target in self.admission.targets:
            self.admission.targets.remove(target)
        connections = self.connections.pop(target, None)
        if connections is not None:
            connections.abort_all()
        log.info("pool %s: target %s removed", self.name, target.address)

    def reap(self) -> None:
        """Cut off leaving targets whose deregistration delay is over (called each second)."""
        now = self.clock()
        for target in list(self.leaving):
            if now >= target.drain_deadline:
                log.warning("pool %s: target %s removed with %d requests still in flight",
                            self.name, target.address, target.in_flight)
                self._remove(target)

    # --- slots ----------------------------------------------------------------------
    async def acquire(
        self, excluded: Collection[Target] = (), request: bytes | None = None,
        skip_body: bool = False, buffering: BodyBuffering = STREAMING,
    ) -> tuple[Target, Prepared | None]:
        """A target with a free slot, waiting in line up to queue_timeout if need be. When
        the request (head and whole body) is given and the slot came free after a wait, it
        is sent on an idle connection the moment the slot is granted: the target gets its
        next request without waiting for this task to be scheduled."""
        target = self.admission.try_acquire(self.clock(), excluded)
        if target is not None:
            return target, None
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_grant(waiter: Waiter) -> None:
            if request is not None and waiter.granted is not None:
                waiter.prepared = self.send_on_idle(waiter.granted, request, skip_body,
                                                    buffering)
            _settle(granted)

        def give_up(_: Waiter) -> None:
            # Out of the line already (the sweep took it): no slot can be granted between
            # the deadline and this task waking up.
            if not granted.done():
                granted.set_exception(TimeoutError())

        waiter = Waiter(excluded=tuple(excluded), on_grant=on_grant, on_timeout=give_up)
        self._join_line(waiter)
        try:
            await granted
        except TimeoutError:
            raise self.queue_timeout_error() from None
        except BaseException:
            self.admission.cancel(waiter)
            if waiter.granted is not None:
                prepared = _prepared(waiter)
                if prepared is not None:  # sent, but nobody will read the answer
                    self.connections[waiter.granted].put(prepared[0], None)
                    prepared[1].close_file()
                self.release(waiter.granted)
            raise
        assert waiter.granted is not None
        return waiter.granted, _prepared(waiter)

    def try_acquire_now(self) -> Target | None:
        """A free slot at once, or None (someone waits already, or every target is full)."""
        return self.admission.try_acquire(self.clock())

    def wait_for_slot(self, settled: Callable[[Waiter], None]) -> None:
        """``acquire`` without a task: join the line; ``settled(waiter)`` is called the
        moment a slot comes free (``waiter.granted`` is the target), or after queue_timeout
        (``waiter.granted`` is None). Raises ``NoCapacity`` at once when there is no target
        or the line is full."""
        self._join_line(Waiter(on_grant=settled, on_timeout=settled))

    def queue_timeout_error(self) -> NoCapacity:
        return NoCapacity(f"pool {self.name!r}: no target free within "
                          f"{self.settings.queue_timeout:g}s")

    def _join_line(self, waiter: Waiter) -> None:
        """Queue ``waiter`` with its deadline; ``NoCapacity`` when there is no target or
        the line is full."""
        if not self.admission.has_targets():
            self.counters.rejected_no_targets += 1
            raise NoCapacity(f"pool {self.name!r} has no targets")
        waiter.deadline = self.clock() + self.settings.queue_timeout
        if not self.admission.enqueue(waiter):
            self.counters.rejected_queue_full += 1
            raise NoCapacity(f"pool {self.name!r}: {self.admission.max_waiting} requests "
                             "already wait for a target")
        self.counters.queued += 1
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(QUEUE_SWEEP_INTERVAL,
                                                                self._expire_waiters)

    def _expire_waiters(self) -> None:
        """Deadlines of the line, checked a few times a second: one timer for the whole
        pool instead of one per waiting request (a timer each cost a tenth of the
        proxy's time under overload)."""
        self._sweep = None
        for waiter in self.admission.expire(self.clock()):
            self.counters.rejected_queue_timeout += 1
            if waiter.on_timeout is not None:
                waiter.on_timeout(waiter)
        if self.admission.waiting:
            self._sweep = asyncio.get_running_loop().call_later(QUEUE_SWEEP_INTERVAL,
                                                                self._expire_waiters)

    def send_on_idle(self, target: Target, request: bytes, skip_body: bool,
                     buffering: BodyBuffering = STREAMING) -> Prepared | None:
        """Send ``request`` on an idle kept-alive connection to ``target`` now; None when
        there is none (or it broke as we wrote): the caller opens one."""
        connections = self.connections.get(target)
        connection = connections.take_idle() if connections is not None else None
        if connections is None or connection is None:
            return None
        response = connection.begin(skip_body, buffering)
        try:
            connection.write(request)
        except ProxyError:
            connections.put(connection, None)
            return None
        return connection, response

    async def acquire_for_check(self, target: Target) -> None:
        """A slot on ``target`` for its health check, ahead of waiting requests: the check
        then rides a pooled connection, as a pre-fork server can serve no extra one."""
        if self.admission.try_acquire_on(target):
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = Waiter(only=target, on_grant=lambda _: _settle(granted))
        self.admission.enqueue_first(waiter)
        try:
            await granted
        except BaseException:
            self.admission.cancel(waiter)
            if waiter.granted is not None:
                self.release(waiter.granted)
            raise

    def release(self, target: Target) -> None:
        # Waiters given the freed slot are woken by their on_grant callback.
        self.admission.release(target, self.clock())
        self._drop_if_drained(target)

    def connections_to(self, target: Target) -> ConnectionPool:
        return self.connections[target]

    # --- health -----------------------------------------------------------------------
    def record_check(self, target: Target, passed: bool) -> None:
        change = target.health.record_check(passed)
        if change is HealthChange.BECAME_UNHEALTHY:
            log.warning("pool %s: target %s unhealthy", self.name, target.address)
            if target in self.connections:
                self.connections[target].close_idle()
        elif change is HealthChange.BECAME_HEALTHY:
            log.info("pool %s: target %s healthy", self.name, target.address)
        self.admission.pump(self.clock())

    def record_connect_failure(self, target: Target) -> None:
        target.connect_failures += 1
        target.health.record_connect_failure(self.clock(), PASSIVE_EJECTION_TIME)

    def other_routable(self, tried: Collection[Target]) -> int:
        return sum(1 for t in routable(self.targets, self.clock()) if t not in tried)

    # --- stats ------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        now = self.clock()
        targets = {
            t.address: {
                "state": ("leaving" if t in self.leaving else
                          "draining" if t.draining else
                          "healthy" if t.health.available(now) else "unhealthy"),
                "healthy": t.health.healthy,
                "in_flight": t.in_flight,
                "limit": t.limit,
                "requests": t.requests,
                "connect_failures": t.connect_failures,
                "target_5xx": t.responses_5xx,
                "connections_opened": self.connections[t].opened if t in self.connections else 0,
                "connections_reused": self.connections[t].reused if t in self.connections else 0,
                "connections_out_of_step": (self.connections[t].out_of_step
                                            if t in self.connections else 0),
                "idle_connections": len(self.connections[t].idle) if t in self.connections else 0,
            }
            for t in self.targets
        }
        counters = self.counters
        return {
            "targets": targets,
            "healthy_targets": sum(1 for t in self.targets if t.health.healthy),
            "unhealthy_targets": sum(1 for t in self.targets if not t.health.healthy),
            "in_flight": sum(t.in_flight for t in self.targets),
            "waiting": len(self.admission.waiting),
            "queued": counters.queued,
            "retries": counters.retries,
            "gateway_502": counters.gateway_502,
            "gateway_503": (counters.rejected_queue_full + counters.rejected_queue_timeout
                            + counters.rejected_no_targets),
            "gateway_504": counters.gateway_504,
            "rejected_queue_full": counters.rejected_queue_full,
            "rejected_queue_timeout": counters.rejected_queue_timeout,
            "rejected_no_targets": counters.rejected_no_targets,
            "target_5xx": sum(t.responses_5xx for t in self.targets),
        }

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for connections in self.connections.values():
            connections.abort_all()


def _prepared(waiter: Waiter) -> Prepared | None:
    return cast(Prepared | None, waiter.prepared)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
