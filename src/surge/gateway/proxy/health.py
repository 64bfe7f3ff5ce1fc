"""Target health as ALB judges it (pure, clock passed in).

Active checks move a target between healthy and unhealthy only after ``healthy_threshold``
successes or ``unhealthy_threshold`` failures in a row. A failed connect on live traffic
ejects the target at once for a short time (passive ejection, like nginx's max_fails=1),
without waiting for the next active check.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class HealthChange(Enum):
    BECAME_HEALTHY = "healthy"
    BECAME_UNHEALTHY = "unhealthy"


class SuccessCodes:
    """ALB's matcher syntax: ``"200"``, ``"200,204"``, ``"200-299"`` or a mix of them."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._ranges: list[tuple[int, int]] = []
        for part in spec.split(","):
            low, dash, high = part.strip().partition("-")
            if not low.strip().isdigit() or (dash and not high.strip().isdigit()):
                raise ValueError(
                    f"success codes must look like '200', '200,204' or '200-299', got {spec!r}"
                )
            self._ranges.append((int(low), int(high or low)))

    def __contains__(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self._ranges)


@dataclass(slots=True)
class TargetHealth:
    healthy_threshold: int
    unhealthy_threshold: int
    # Our supervisor registers an instance only after its health check passed, and a fixed
    # target is assumed up: so a new target starts healthy and takes traffic at once, and
    # the active checks take it out if they disagree (ALB instead waits for the first
    # checks in an "initial" state, which would leave a fresh pool answering 503).
    healthy: bool = True
    successes_in_row: int = 0
    failures_in_row: int = 0
    ejected_until: float = 0.0

    def record_check(self, passed: bool) -> HealthChange | None:
        """Count one active check result; return the change of state it caused, if any."""
        if passed:
            self.successes_in_row += 1
            self.failures_in_row = 0
            # A target that answers its check is reachable again: end any passive ejection.
            self.ejected_until = 0.0
            if not self.healthy and self.successes_in_row >= self.healthy_threshold:
                self.healthy = True
                return HealthChange.BECAME_HEALTHY
        else:
            self.failures_in_row += 1
            self.successes_in_row = 0
            if self.healthy and self.failures_in_row >= self.unhealthy_threshold:
                self.healthy = False
                return HealthChange.BECAME_UNHEALTHY
        return None

    def record_connect_failure(self, now: float, ejection_time: float) -> None:
        self.ejected_until = now + ejection_time

    def available(self, now: float) -> bool:
        """Healthy and not passively ejected: may take new requests."""
        return self.healthy and now >= self.ejected_until
