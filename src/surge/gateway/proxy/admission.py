"""Per-target slots and the bounded FIFO of requests waiting for one (pure).

A request takes a slot on a target before it is sent and gives it back when the response
is done, so a target never has more than ``limit`` requests in flight. When every
routable target is full, the request waits in a FIFO of at most ``max_waiting``; a freed
slot goes to the oldest waiter that can use it. The caller owns time: it cancels a waiter
whose wait exceeded queue_timeout.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from surge.gateway.proxy.balancing import Balancer, Target, routable


@dataclass(eq=False, slots=True)
class Waiter:
    excluded: Collection[Target] = ()  # targets already tried by this request (retries)
    granted: Target | None = None
    on_grant: Callable[[Waiter], None] | None = field(default=None, repr=False)


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
        for waiter in list(self.waiting):
            target = self.balancer.choose(candidates, waiter.excluded)
            if target is None:
                if not waiter.excluded:
                    break  # no free slot for anyone: later waiters cannot do better
                continue  # only its excluded targets are free; a later waiter may use them
            target.in_flight += 1
            target.requests += 1
            waiter.granted = target
            self.waiting.remove(waiter)
            granted.append(waiter)
            if waiter.on_grant is not None:
                waiter.on_grant(waiter)
        return granted

    def has_targets(self) -> bool:
        return any(not t.draining for t in self.targets)

    def _take(self, now: float, excluded: Collection[Target]) -> Target | None:
        target = self.balancer.choose(routable(self.targets, now), excluded)
        if target is not None:
            target.in_flight += 1
            target.requests += 1
        return target
