"""Target tracking for one group (a pool or a worker group), as AWS documents it.

Each ``period`` the caller takes one datapoint per policy and asks for a decision:

- desired = ceil(current × metric ÷ target), bounded by min and max, where *current* is
  the number of in-service instances the metric was measured over;
- scale out as soon as the last ``evaluation_periods`` datapoints are all over target
  (AWS's high alarm); scale in only when the last ``scale_in_evaluation_periods`` are all
  under target × (1 − margin) (the low alarm: longer and with a margin, because removing
  capacity too early hurts more than keeping it a little longer);
- several policies: out if any says out, in only if all agree, to the largest desired;
- instances in warmup are not in the metric (the caller leaves them out), count toward the
  desired capacity (a scale-out only adds beyond them) and block scale-in;
- a missing datapoint breaks a streak: no data, no action;
- cooldowns: after a scale-in, no further scale-in for ``scale_in_cooldown``, but a
  scale-out goes ahead at once; after a scale-out, no scale-in for ``scale_out_cooldown``,
  and a further scale-out only adds beyond the capacity already added (it is part of the
  desired capacity the new proposal must exceed) — AWS's "continuously but not
  excessively".

Pure and clock-injected: ``evaluate`` takes ``now`` and returns a ``Decision`` or None.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Direction(StrEnum):
    OUT = "out"
    IN = "in"


@dataclass(frozen=True, slots=True)
class Rules:
    """The group's bounds and timing (``ScalingSettings`` in config form)."""

    min: int
    max: int
    evaluation_periods: int = 3
    scale_in_evaluation_periods: int = 15
    scale_in_margin: float = 0.1
    scale_out_cooldown: float = 30.0
    scale_in_cooldown: float = 120.0
    disable_scale_in: bool = False


@dataclass(frozen=True, slots=True)
class Reading:
    """One datapoint: ``value`` of the metric measured over ``capacity`` in-service instances.

    A total shared by the group (queue backlog, requests) is ``total ÷ capacity``; when no
    instance is in service such a total is read as ``Reading(total, 1)``, which gives the
    same desired capacity, ceil(total ÷ target), so a group can grow from zero."""

    value: float
    capacity: int


@dataclass(frozen=True, slots=True)
class Capacity:
    desired: int  # what the group is being held at (warming instances included)
    warming: int  # started but not yet past their warmup: not in the metric


@dataclass(frozen=True, slots=True)
class Decision:
    direction: Direction
    policy: str  # the policy that set the new size
    value: float  # its latest datapoint
    target: float
    from_desired: int
    to_desired: int


class GroupScaler:
    """The target-tracking state of one group: datapoint history and last activities."""

    def __init__(self, rules: Rules, targets: Mapping[str, float]) -> None:
        if not targets:
            raise ValueError("a group scaler needs at least one policy")
        self.rules = rules
        self.targets = dict(targets)
        history = max(rules.evaluation_periods, rules.scale_in_evaluation_periods)
        self._datapoints: dict[str, deque[Reading | None]] = {
            name: deque(maxlen=history) for name in self.targets}
        self._last_scale_out: float | None = None
        self._last_scale_in: float | None = None

    def evaluate(self, now: float, readings: Mapping[str, Reading | None],
                 capacity: Capacity) -> Decision | None:
        """Record this period's datapoints (a policy absent from ``readings`` has none) and
        decide. The caller applies the decision; it is remembered for the cooldowns."""
        for name, datapoints in self._datapoints.items():
            datapoints.append(readings.get(name))
        decision = self._scale_out(now, capacity) or self._scale_in(now, capacity)
        if decision is not None:
            if decision.direction == Direction.OUT:
                self._last_scale_out = now
            else:
                self._last_scale_in = now
        return decision

    def desired_for(self, policy: str, reading: Reading) -> int:
        """ceil(current × metric ÷ target) within min..max."""
        wanted = math.ceil(reading.capacity * reading.value / self.targets[policy] - 1e-9)
        return max(self.rules.min, min(self.rules.max, wanted))

    # -- the two alarms ----------------------------------------------------------------

    def _scale_out(self, now: float, capacity: Capacity) -> Decision | None:
        proposals = []
        for name, target in self.targets.items():
            streak = self._streak(name, self.rules.evaluation_periods)
            if streak is not None and all(r.value > target for r in streak):
                proposals.append(self._proposal(name, streak[-1], Direction.OUT, capacity))
        growing = [p for p in proposals if p.to_desired > capacity.desired]
        return max(growing, key=lambda p: p.to_desired, default=None)

    def _scale_in(self, now: float, capacity: Capacity) -> Decision | None:
        rules = self.rules
        if rules.disable_scale_in or capacity.warming > 0 \
                or _within(now, self._last_scale_in, rules.scale_in_cooldown) \
                or _within(now, self._last_scale_out, rules.scale_out_cooldown):
            return None
        proposals = []
        for name, target in self.targets.items():
            streak = self._streak(name, rules.scale_in_evaluation_periods)
            low = target * (1 - rules.scale_in_margin)
            if streak is None or not all(r.value < low for r in streak):
                return None  # every policy must agree
            proposals.append(self._proposal(name, streak[-1], Direction.IN, capacity))
        # The policy that wants the most capacity sets it: the others would leave it short.
        largest = max(proposals, key=lambda p: p.to_desired)
        return largest if largest.to_desired < capacity.desired else None

    def _streak(self, name: str, length: int) -> list[Reading] | None:
        """The last ``length`` datapoints, or None when there are fewer or one is missing."""
        datapoints = self._datapoints[name]
        if len(datapoints) < length:
            return None
        last = list(datapoints)[-length:]
        return None if any(r is None for r in last) else [r for r in last if r is not None]

    def _proposal(self, name: str, latest: Reading, direction: Direction,
                  capacity: Capacity) -> Decision:
        return Decision(direction, name, latest.value, self.targets[name], capacity.desired,
                        self.desired_for(name, latest))


def _within(now: float, since: float | None, period: float) -> bool:
    return since is not None and now - since < period
