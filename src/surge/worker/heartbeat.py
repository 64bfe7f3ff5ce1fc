"""When to extend a running task's visibility, and when to give up on it.

Pure arithmetic on a monotonic clock. A task received at ``started_at`` with visibility
``timeout`` is extended once half its current visibility has passed, by another ``timeout``,
again and again; once ``max_run_time`` has passed since it started it is cancelled instead.
Extending at half-time leaves the other half as margin for a slow ChangeMessageVisibility.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


class HeartbeatAction(Enum):
    WAIT = "wait"
    EXTEND = "extend"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class HeartbeatPolicy:
    visibility_timeout: float
    max_run_time: float

    def extension_seconds(self) -> int:
        """The visibility each extension asks for (SQS takes whole seconds, at least 1)."""
        return max(1, math.ceil(self.visibility_timeout))

    def decide(self, started_at: float, visible_until: float, now: float) -> HeartbeatAction:
        if now - started_at >= self.max_run_time:
            return HeartbeatAction.CANCEL
        if now >= self.extend_at(visible_until):
            return HeartbeatAction.EXTEND
        return HeartbeatAction.WAIT

    def extend_at(self, visible_until: float) -> float:
        """The moment half of the current visibility window remains."""
        return visible_until - self.visibility_timeout / 2

    def next_check(self, started_at: float, visible_until: float) -> float:
        """The earliest moment ``decide`` can answer something other than WAIT."""
        return min(self.extend_at(visible_until), started_at + self.max_run_time)


@dataclass(slots=True)
class Lease:
    """The visibility a message holds: when it was received and until when it is ours."""

    started_at: float
    visible_until: float

    def extended(self, now: float, seconds: int) -> None:
        self.visible_until = now + seconds
