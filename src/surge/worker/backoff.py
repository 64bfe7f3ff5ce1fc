"""Retry delays: exponential backoff with full jitter (AWS architecture blog's "Full Jitter").

``delay = uniform(0, min(cap, base * 2 ** (attempt - 1)))`` spreads retries of a burst of
failures over the whole window instead of retrying them in lock-step.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# SQS refuses a visibility timeout above 12 hours.
MAX_VISIBILITY_SECONDS = 43_200


def backoff_ceiling(attempt: int, base: float, cap: float) -> float:
    """The upper bound of the delay after failed attempt number ``attempt`` (1-based)."""
    exponent = max(attempt - 1, 0)
    # 2 ** 64 is plenty past any cap; bounding it avoids huge floats from a large count.
    return min(cap, base * 2.0 ** min(exponent, 64))


def full_jitter_delay(
    attempt: int, base: float, cap: float, uniform: Callable[[float, float], float] = random.uniform
) -> int:
    """Whole seconds to keep the message invisible before its next attempt."""
    delay = uniform(0.0, backoff_ceiling(attempt, base, cap))
    return min(round(delay), MAX_VISIBILITY_SECONDS)
