"""The result store interface: one record per task id, kept with a TTL, and the enqueue
route's Idempotency-Key bindings.

Lifecycle of ``status``: queued → running → succeeded | failed (will be retried) | dead
(dead-lettered). ``failed`` goes back to ``running`` on the next delivery, and ``dead`` goes
back to ``running`` when the task is redriven from the dead-letter queue. Only ``succeeded``
is final. Which write applies in which state is one table, ``surge.results.rules``; every
implementation follows it (the memory store calls it, the SQLite statement and the Redis
script are generated from it, and one contract suite runs over all three).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

TaskStatus = Literal["queued", "running", "succeeded", "failed", "dead"]
FINAL_STATUSES: frozenset[str] = frozenset({"succeeded"})


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One entry of a record's history: the status written, its attempt, and when."""

    status: TaskStatus
    attempts: int
    at: float  # epoch seconds


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
    history: tuple[StatusChange, ...] = ()  # oldest first, the last HISTORY_LIMIT changes

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
            "history": [{"status": change.status, "attempts": change.attempts, "at": change.at}
                        for change in self.history],
        }


@dataclass(frozen=True, slots=True)
class KeyBinding:
    """What an idempotency key names: its task, and the fingerprint of the request that
    bound it. ``created`` is True when this call made the binding (and recorded the task
    ``queued`` with it); False when the key was already bound. ``sent``: the queue has
    confirmed a send of the task (``mark_key_sent``)."""

    task_id: str
    fingerprint: str
    created: bool
    sent: bool = False


@runtime_checkable
class ResultStore(Protocol):
    async def mark_queued(self, records: list[tuple[str, str]]) -> None:
        """Record (task_id, task_name) pairs as queued unless a record already exists."""
        ...

    async def bind_key(self, key: str, task_id: str, task: str, fingerprint: str,
                       ttl: float) -> KeyBinding:
        """Bind idempotency ``key`` to ``task_id`` for ``ttl`` seconds and record the task
        queued, in one atomic write; or, if ``key`` is bound already (and not expired), the
        existing binding, changing nothing."""
        ...

    async def mark_key_sent(self, key: str) -> None:
        """Note on ``key``'s binding that the queue confirmed a send of its task, so a retry
        with the key need not send it again."""
        ...

    async def mark_running(self, task_id: str, task: str, attempt: int, owner: str) -> bool:
        """Record that the delivery ``owner`` (a send id, or a message id) runs the task.
        False when it must not run: the task succeeded already, or another copy of it holds
        it (see ``surge.results.rules``); nothing is written then."""
        ...

    async def mark_succeeded(self, task_id: str, task: str, attempts: int, result: Any) -> None: ...

    async def mark_failed(self, task_id: str, task: str, attempts: int, error: str) -> None: ...

    async def mark_dead(self, task_id: str, task: str, attempts: int, error: str) -> None: ...

    async def get(self, task_id: str) -> TaskRecord | None: ...

    async def close(self) -> None: ...
