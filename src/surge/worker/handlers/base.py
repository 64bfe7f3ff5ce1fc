"""The handler seam: the consumer hands a ``TaskCall`` to a ``TaskHandler`` and gets a JSON
value back, or an exception.

``surge.errors.HandlerError(permanent=True)`` means no retry can help (straight to the
dead-letter queue); any other exception is a failure to retry. The consumer enforces time
limits by cancelling ``run``: a handler must then stop the work it started (terminate its
process) before re-raising ``CancelledError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class TaskCall:
    task_id: str
    task: str
    payload: Any
    attempt: int  # 1 on the first delivery (SQS ApproximateReceiveCount)


class TaskHandler(Protocol):
    async def run(self, call: TaskCall) -> Any: ...

    async def close(self) -> None:
        """Release pools and processes; called once when the worker stops."""
        ...
