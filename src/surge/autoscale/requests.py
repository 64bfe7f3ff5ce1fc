"""Requests per target, counted from the gateways' access log lines as the supervisor relays
them: each proxied request's line names its ``"target":"HOST:PORT"``. The autoscaler turns
the difference between two counts into ALBRequestCountPerTarget (requests per minute)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

_TARGET_FIELD = '"target":"'


def target_of(line: str) -> str | None:
    """The target address in an access log line (orjson writes no spaces), or None.

    A substring search, not a JSON parse: this runs for every request a gateway serves."""
    start = line.find(_TARGET_FIELD)
    if start < 0:
        return None
    start += len(_TARGET_FIELD)
    end = line.find('"', start)
    return line[start:end] if end > start else None


class RequestTally:
    """Requests seen per target address since the start (never reset: readers diff)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def observe(self, lines: Iterable[str]) -> None:
        for line in lines:
            target = target_of(line)
            if target is not None:
                self.counts[target] += 1

    def forget_except(self, addresses: set[str]) -> None:
        """Drop addresses no pool has any more (ports are not reused forever)."""
        for address in set(self.counts) - addresses:
            del self.counts[address]


def per_minute(count: int, elapsed: float) -> float:
    return count * 60.0 / elapsed if elapsed > 0 else 0.0
