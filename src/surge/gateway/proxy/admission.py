"""Per-target slots and the bounded FIFO of requests waiting for one (pure).

A request takes a slot on a target before it is sent and gives it back when the response
is done, so a target never has more than ``limit`` requests in flight. When every
routable target is full, the request waits in a FIFO of at most ``max_waiting``; a freed
slot goes to the oldest waiter that can use it. The caller owns time: it cancels a waiter
whose wait exceeded queue_timeout.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from surge.gateway.proxy.balancing import Balancer, Target, routable


@dataclass(eq=False, slots=True)
class Waiter:
    excluded: Collection[Target] = ()  # targets already tried by this request (retries)
    only: Target | None = None  # a health check waits for a slot on its own target
    granted: Target | None = None
    prepared: object | None = None  # what the caller did at once when granted (see pool)
    on_grant: Callable[[Waiter], None] | None = field(default=None, repr=False)
    deadline: float = math.inf  # when it gives up (health checks never do)
    on_timeout: Callable[[Waiter], None] | None = field(default=None, repr=False)


class Admission:
    def __init__(self, balancer: Balancer, max_waiting: int) -> None:
        self.balancer = balancer
        self.max_waiting = max_waiting
        self.targets: list[Target] = []
        self.waiting: deque[Waiter] = deque()

    def try_acquire(self, now: float, excluded: Collection[Target] = ()) -> Target | None:
        """Take a slot at once if one is free (and nobody waits before us), else None."""
        if self.waiting:
            return None  # first come, first served: a newcomer never overtakes a waiter
        return self._take(now, excluded)

    def enqueue(self, waiter: Waiter) -> bool:
        """Join the wait queue; False when it is full (the caller answers 503)."""
        if len(self.waiting) >= self.max_waiting:
            return False
        self.waiting.append(waiter)
        return True

    def try_acquire_on(self, target: Target) -> bool:
        """A slot on this very target (health checks): ahead of any waiter, whatever its
        health, since a check must not wait behind the traffic it is judging."""
        if not target.has_free_slot:
            return False
        target.in_flight += 1
        return True

    def enqueue_first(self, waiter: Waiter) -> None:
        """Wait at the head of the line (health checks; never more than one per target)."""
        self.waiting.appendleft(waiter)

    def cancel(self, waiter: Waiter) -> None:
        """The waiter gave up (timeout, client gone). A slot it was granted meanwhile is
        handed back by the caller through ``release``."""
        try:
            self.waiting.remove(waiter)
        except ValueError:
            pass

    def release(self, target: Target, now: float) -> list[Waiter]:
        """Give a slot back; returns the waiters that got a slot because of it."""
        target.in_flight -= 1
        return self.pump(now)

    def pump(self, now: float) -> list[Waiter]:
        """Hand free slots to waiters in arrival order. Called after a release and whenever
        capacity may have appeared (a target added, healthy again, undrained)."""
        granted: list[Waiter] = []
        if not self.waiting:
            return granted
        candidates = routable(self.targets, now)
        index = 0
        # Walk the line without copying it: under overload thousands wait, and this runs
        # on every release.
        while index < len(self.waiting):
            waiter = self.waiting[index]
            if waiter.only is not None:
                target = waiter.only if waiter.only.has_free_slot else None
            else:
                target = self.balancer.choose(candidates, waiter.excluded)
            if target is None:
                if not waiter.excluded and waiter.only is None:
                    break  # no free slot for anyone: later waiters cannot do better
                index += 1  # it wants particular targets; a later waiter may use the others
                continue
            del self.waiting[index]
            target.in_flight += 1
            if waiter.only is None:
                target.requests += 1
            waiter.granted = target
            granted.append(waiter)
            if waiter.on_grant is not None:
                waiter.on_grant(waiter)
        return granted

    def expire(self, now: float) -> list[Waiter]:
        """Take the waiters whose deadline has passed out of the line. Requests join at
        the tail with the same queue_timeout, so deadlines grow along the line: the walk
        stops at the first one still in time (health checks, first in line, have none)."""
        expired: list[Waiter] = []
        index = 0
        while index < len(self.waiting):
            waiter = self.waiting[index]
            if waiter.deadline == math.inf:
                index += 1
                continue
            if waiter.deadline > now:
                break
            del self.waiting[index]
            expired.append(waiter)
        return expired

    def has_targets(self) -> bool:
        # A loop, not any() over a generator: this runs for every request that waits.
        for target in self.targets:  # noqa: SIM110
            if not target.draining:
                return True
        return False

    def _take(self, now: float, excluded: Collection[Target]) -> Target | None:
        target = self.balancer.choose(routable(self.targets, now), excluded)
        if target is not None:
            target.in_flight += 1
            target.requests += 1
        return target
