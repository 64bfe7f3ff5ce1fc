"""Targets and how one is chosen for a request (pure).

A ``Target`` records what the choice needs: its concurrency limit and how many requests
it has in flight, whether it is draining, and its health. The balancers pick among
targets that have a free slot; which targets may be considered at all (healthy ones, or
all of them when none is healthy) is decided by ``routable``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from surge.gateway.proxy.health import TargetHealth


@dataclass(eq=False, slots=True)
class Target:
    address: str  # "127.0.0.1:5001"
    host: str
    port: int
    limit: int  # most requests in flight at once (a pre-fork server's worker count)
    health: TargetHealth
    in_flight: int = 0
    draining: bool = False
    drain_deadline: float = 0.0  # when draining: in-flight requests are cut off after this
    requests: int = 0  # counters for stats(): requests sent, failed connects, 5xx answers
    connect_failures: int = 0
    responses_5xx: int = 0

    @classmethod
    def parse(cls, address: str, limit: int, health: TargetHealth) -> Target:
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"a target address must be HOST:PORT, got {address!r}")
        return cls(address=address, host=host.strip("[]"), port=int(port), limit=limit,
                   health=health)

    @property
    def has_free_slot(self) -> bool:
        return self.in_flight < self.limit


def routable(targets: Sequence[Target], now: float) -> list[Target]:
    """Targets that may take new requests. Draining targets never do. When no target is
    available, every non-draining one is: fail open, as ALB does, because a health check
    that fails everywhere is more often wrong than the whole fleet being down."""
    available = [t for t in targets if not t.draining and t.health.available(now)]
    return available or [t for t in targets if not t.draining]


class Balancer(Protocol):
    def choose(self, candidates: Sequence[Target], excluded: Collection[Target]) -> Target | None:
        """A candidate with a free slot that is not in ``excluded``, or None."""
        ...


class RoundRobin:
    """Each next request goes to the next target in turn, skipping full ones."""

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, candidates: Sequence[Target], excluded: Collection[Target]) -> Target | None:
        count = len(candidates)
        for step in range(count):
            target = candidates[(self._turn + step) % count]
            if target.has_free_slot and target not in excluded:
                self._turn = (self._turn + step + 1) % count
                return target
        return None


class LeastOutstanding:
    """The target with the fewest requests in flight; ties go round robin so equal
    targets share the load instead of the first one taking everything."""

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, candidates: Sequence[Target], excluded: Collection[Target]) -> Target | None:
        count = len(candidates)
        best: Target | None = None
        best_step = 0
        for step in range(count):
            target = candidates[(self._turn + step) % count]
            if not target.has_free_slot or target in excluded:
                continue
            if best is None or target.in_flight < best.in_flight:
                best, best_step = target, step
        if best is not None:
            self._turn = (self._turn + best_step + 1) % count
        return best


def make_balancer(kind: str) -> Balancer:
    if kind == "round_robin":
        return RoundRobin()
    if kind == "least_outstanding":
        return LeastOutstanding()
    raise ValueError(f"balancing must be 'round_robin' or 'least_outstanding', got {kind!r}")
