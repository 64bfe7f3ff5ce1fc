"""The scaling activity history of ``surge up``: what changed, when and why — like an Auto
Scaling group's activity history, bounded so a long-running supervisor holds a fixed amount."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from surge.autoscale.policy import Decision

HISTORY_LENGTH = 100


@dataclass(frozen=True, slots=True)
class ScalingActivity:
    time: float  # wall clock
    kind: str  # "pool" or "worker"
    group: str
    direction: str  # "out" or "in"
    policy: str  # "cpu", "requests_per_target", "backlog_per_worker", "gauge:NAME"
    value: float
    target: float
    from_desired: int
    to_desired: int

    @classmethod
    def of(cls, time: float, kind: str, group: str, decision: Decision) -> ScalingActivity:
        return cls(time, kind, group, str(decision.direction), decision.policy,
                   round(decision.value, 3), decision.target, decision.from_desired,
                   decision.to_desired)

    @property
    def cause(self) -> str:
        comparison = ">" if self.direction == "out" else "<"
        return (f"{self.policy} {self.value:g} {comparison} target {self.target:g}: "
                f"desired {self.from_desired} → {self.to_desired}")


class ActivityHistory:
    def __init__(self, length: int = HISTORY_LENGTH) -> None:
        self._activities: deque[ScalingActivity] = deque(maxlen=length)

    def record(self, activity: ScalingActivity) -> None:
        self._activities.append(activity)

    def newest_first(self) -> list[dict[str, Any]]:
        return [{**asdict(a), "cause": a.cause} for a in reversed(self._activities)]
