"""A load profile: load (concurrent clients, or tasks per second) over time.

Written as points joined by straight lines, ``"0:0, 10m:50000, 20m:50000, 22m:0"`` —
ramp to 50,000 over ten minutes, hold ten minutes, drop in two. Times accept the config's
durations (``"90s"``, ``"10m"``, ``"1h"``); loads accept ``_`` or ``k`` (``50_000``, ``50k``).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from itertools import pairwise

from surge.config.types import parse_duration


class ProfileError(ValueError):
    """A profile that cannot be read; the message names the bad part."""


@dataclass(frozen=True, slots=True)
class LoadProfile:
    times: tuple[float, ...]  # seconds from the start, strictly increasing, first is 0
    loads: tuple[float, ...]

    @property
    def duration(self) -> float:
        return self.times[-1]

    @property
    def peak(self) -> float:
        return max(self.loads)

    def load_at(self, t: float) -> float:
        """The load at ``t`` seconds, interpolated; the last value holds after the end."""
        if t <= 0:
            return self.loads[0]
        if t >= self.times[-1]:
            return self.loads[-1]
        i = bisect_right(self.times, t)
        t0, t1 = self.times[i - 1], self.times[i]
        l0, l1 = self.loads[i - 1], self.loads[i]
        return l0 + (l1 - l0) * (t - t0) / (t1 - t0)


def parse_profile(text: str) -> LoadProfile:
    points: list[tuple[float, float]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        when, sep, load = part.partition(":")
        if not sep:
            raise ProfileError(f"profile point {part!r}: expected TIME:LOAD, e.g. '10m:50000'")
        try:
            t = parse_duration(when.strip())
        except ValueError as exc:
            raise ProfileError(f"profile point {part!r}: bad time {when.strip()!r} ({exc})") \
                from None
        points.append((t, _parse_load(load.strip(), part)))
    if len(points) < 2:
        raise ProfileError(f"a profile needs at least two points, got {text!r}")
    if points[0][0] != 0:
        raise ProfileError(f"a profile starts at time 0, got {points[0][0]:g}s first")
    for (t0, _), (t1, _) in pairwise(points):
        if t1 <= t0:
            raise ProfileError(f"profile times must increase: {t1:g}s comes after {t0:g}s")
    return LoadProfile(tuple(t for t, _ in points), tuple(load for _, load in points))


def _parse_load(text: str, part: str) -> float:
    raw = text.replace("_", "").lower()
    scale = 1000.0 if raw.endswith("k") else 1.0
    try:
        value = float(raw.removesuffix("k")) * scale
    except ValueError:
        raise ProfileError(f"profile point {part!r}: bad load {text!r}") from None
    if value < 0:
        raise ProfileError(f"profile point {part!r}: load must be ≥ 0, got {text!r}")
    return value
