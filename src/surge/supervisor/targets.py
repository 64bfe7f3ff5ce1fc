"""The versioned list of every pool's targets that gateways follow (``GET /v1/targets``).

Pure and clock-injected: a target is ``active`` once registered, ``draining`` for the
pool's deregistration delay after it is taken out of service, then removed. Every change
bumps ``version`` so a long-polling gateway learns about it with one request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

TargetState = Literal["active", "draining"]


@dataclass(slots=True)
class TargetEntry:
    address: str
    state: TargetState
    drain_deadline: float | None = None  # when a draining target is removed


class TargetTable:
    def __init__(self, pools: list[str]) -> None:
        self.version = 1
        self._pools: dict[str, dict[str, TargetEntry]] = {name: {} for name in pools}

    def add_pool(self, pool: str) -> None:
        if pool not in self._pools:
            self._pools[pool] = {}
            self.version += 1

    def register(self, pool: str, address: str) -> None:
        entries = self._pools.setdefault(pool, {})
        current = entries.get(address)
        if current is not None and current.state == "active":
            return
        entries[address] = TargetEntry(address, "active")
        self.version += 1

    def drain(self, pool: str, address: str, now: float, delay: float) -> bool:
        """Stop sending new requests to ``address``; False if it is not an active target."""
        entry = self._pools.get(pool, {}).get(address)
        if entry is None or entry.state != "active":
            return False
        entry.state = "draining"
        entry.drain_deadline = now + delay
        self.version += 1
        return True

    def remove(self, pool: str, address: str) -> bool:
        if self._pools.get(pool, {}).pop(address, None) is None:
            return False
        self.version += 1
        return True

    def expire_drained(self, now: float) -> list[tuple[str, str]]:
        """Remove the draining targets whose delay is over; returns (pool, address) pairs."""
        expired = [
            (pool, entry.address)
            for pool, entries in self._pools.items()
            for entry in entries.values()
            if entry.state == "draining" and entry.drain_deadline is not None
            and entry.drain_deadline <= now
        ]
        for pool, address in expired:
            self.remove(pool, address)
        return expired

    def state_of(self, pool: str, address: str) -> TargetState | None:
        entry = self._pools.get(pool, {}).get(address)
        return entry.state if entry else None

    def addresses(self, pool: str) -> list[str]:
        return list(self._pools.get(pool, {}))

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "pools": {
                pool: [{"address": e.address, "state": e.state} for e in entries.values()]
                for pool, entries in self._pools.items()
            },
        }
