"""What happens to a message whose attempt failed: the retry policy, pure.

- a permanent failure (``HandlerError(permanent=True)``, the command's permanent exit code)
  goes to the dead-letter queue now;
- the last attempt the queue allows (``maxReceiveCount``) is made visible again at once, so
  the queue's redrive moves it to the dead-letter queue on its next receive (and one
  delivered beyond that limit, which the queue failed to redrive, is moved by the worker);
- anything else is retried after an exponential backoff with full jitter.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from surge.worker.backoff import full_jitter_delay


@dataclass(frozen=True, slots=True)
class Retry:
    delay_seconds: int


@dataclass(frozen=True, slots=True)
class DeadLetterNow:
    reason: str


@dataclass(frozen=True, slots=True)
class LeaveForRedrive:
    reason: str


RetryDecision = Retry | DeadLetterNow | LeaveForRedrive


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    backoff_base: float
    backoff_max: float
    max_receive_count: int | None  # the queue's redrive limit; None: retry forever
    uniform: Callable[[float, float], float] = random.uniform

    def decide(self, attempt: int, error: str, permanent: bool) -> RetryDecision:
        if permanent:
            return DeadLetterNow(f"permanent failure: {error}")
        if self.max_receive_count is not None and attempt > self.max_receive_count:
            # Past the limit yet delivered: the queue did not redrive (its dead-letter queue
            # is gone?). Move it ourselves rather than fail it again forever.
            return DeadLetterNow(
                f"failed {attempt} attempts, beyond maxReceiveCount {self.max_receive_count} "
                f"(not redriven): {error}"
            )
        if self.max_receive_count is not None and attempt == self.max_receive_count:
            return LeaveForRedrive(
                f"failed {attempt} of {self.max_receive_count} attempts: {error}"
            )
        return Retry(full_jitter_delay(attempt, self.backoff_base, self.backoff_max, self.uniform))
