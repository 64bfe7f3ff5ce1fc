"""The result store interface: one record per task id, kept with a TTL.

Lifecycle of ``status``: queued → running → succeeded | failed (will be retried) | dead
(dead-lettered). ``failed`` may go back to ``running``. A record never moves out of
``succeeded`` or ``dead`` (a late or duplicate writer cannot undo a final state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

TaskStatus = Literal["queued", "running", "succeeded", "failed", "dead"]
FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "dead"})


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: str
    task: str
    status: TaskStatus
    attempts: int
    created_at: float  # epoch seconds when first recorded
    updated_at: float
    result: Any = None  # JSON value returned by the handler
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "status": self.status,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "result": self.result,
            "error": self.error,
        }


@runtime_checkable
class ResultStore(Protocol):
    async def mark_queued(self, records: list[tuple[str, str]]) -> None:
        """Record (task_id, task_name) pairs as queued unless a record already exists."""
        ...

    async def mark_running(self, task_id: str, task: str, attempt: int) -> None: ...

    async def mark_succeeded(self, task_id: str, task: str, attempts: int, result: Any) -> None: ...

    async def mark_failed(self, task_id: str, task: str, attempts: int, error: str) -> None: ...

    async def mark_dead(self, task_id: str, task: str, attempts: int, error: str) -> None: ...

    async def get(self, task_id: str) -> TaskRecord | None: ...

    async def close(self) -> None: ...
