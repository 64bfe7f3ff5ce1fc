"""Which status write applies to which record: the result store's state machine, pure.

A task's record moves through ``TRANSITIONS``: a write absent from the table never applies,
and one present applies when its guard holds. Only ``succeeded`` is final, so a task redriven
from the dead-letter queue runs again and its record follows (dead → running → …), with the
move in its history.

The ``owner`` of a running task is the delivery that holds it: the envelope's ``send_id``
(the message id for bodies without one). A client that retried an enqueue with the same
Idempotency-Key may have put two copies of a task in the queue, under two send ids; the
first to start holds the task, and the other is refused while the holder is running or
waiting to retry (its own message is still in the queue, so nothing is lost). A redelivery
of the same message has the same owner and runs, as SQS's at-least-once delivery asks.

The memory store calls ``apply``; the SQLite store's UPSERT condition and the Redis store's
script are generated from the same table, and one contract suite (tests/results) runs every
store through every pair of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from surge.results.interface import StatusChange, TaskRecord, TaskStatus

HISTORY_LIMIT = 16  # status changes kept per record, the newest


class Guard(Enum):
    ALWAYS = "always"
    SAME_OWNER = "same owner"  # the record has no owner yet, or the writer is its owner
    NOT_OLDER = "not older"  # the write's attempt is not older than the record's


# (status now, status written) → when the write applies. ``queued`` is never written over a
# record: the gateway only inserts it (``queued_task``). A task without a record takes any
# write (its queued record may have expired, or been written by another gateway's store).
TRANSITIONS: dict[tuple[TaskStatus, TaskStatus], Guard] = {
    ("queued", "running"): Guard.ALWAYS,
    ("running", "running"): Guard.SAME_OWNER,  # its message, delivered again
    ("failed", "running"): Guard.SAME_OWNER,  # the retry of its message
    ("dead", "running"): Guard.ALWAYS,  # redriven from the dead-letter queue
    ("queued", "succeeded"): Guard.ALWAYS,
    ("running", "succeeded"): Guard.ALWAYS,
    ("failed", "succeeded"): Guard.ALWAYS,
    ("dead", "succeeded"): Guard.ALWAYS,
    ("queued", "failed"): Guard.NOT_OLDER,
    ("running", "failed"): Guard.NOT_OLDER,
    ("failed", "failed"): Guard.NOT_OLDER,
    ("queued", "dead"): Guard.NOT_OLDER,
    ("running", "dead"): Guard.NOT_OLDER,
    ("failed", "dead"): Guard.NOT_OLDER,
    ("dead", "dead"): Guard.NOT_OLDER,
}


@dataclass(frozen=True, slots=True)
class StoredTask:
    """A record as stored: the public ``TaskRecord`` fields plus its owner and expiry."""

    id: str
    task: str
    status: TaskStatus
    attempts: int
    created_at: float
    updated_at: float
    expires_at: float
    owner: str | None = None
    result: bytes | None = None  # the handler's result, as JSON
    error: str | None = None
    history: tuple[StatusChange, ...] = ()

    def record(self, result: object = None) -> TaskRecord:
        """The public view; ``result`` is the decoded JSON of ``self.result``."""
        return TaskRecord(self.id, self.task, self.status, self.attempts, self.created_at,
                          self.updated_at, result, self.error, self.history)


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """A worker's write: the status, its attempt, and (for ``running``) the delivery."""

    task: str
    status: TaskStatus
    attempts: int
    owner: str | None = None
    result: bytes | None = None
    error: str | None = None


def queued_task(task_id: str, task: str, now: float, ttl: float) -> StoredTask:
    return StoredTask(task_id, task, "queued", 0, now, now, now + ttl,
                      history=(StatusChange("queued", 0, now),))


def accepts(current: StoredTask | None, write: StatusWrite) -> bool:
    if current is None:
        return True
    guard = TRANSITIONS.get((current.status, write.status))
    if guard is None:
        return False
    if guard is Guard.SAME_OWNER:
        return current.owner is None or current.owner == write.owner
    if guard is Guard.NOT_OLDER:
        return write.attempts >= current.attempts
    return True


def apply(current: StoredTask | None, task_id: str, write: StatusWrite, now: float,
          ttl: float) -> StoredTask | None:
    """The record after ``write``, or None when the write does not apply."""
    if not accepts(current, write):
        return None
    change = StatusChange(write.status, write.attempts, now)
    if current is None:
        return StoredTask(task_id, write.task, write.status, write.attempts, now, now, now + ttl,
                          write.owner, write.result, write.error, (change,))
    # Only a start changes hands; the outcome of a run leaves its owner on record.
    owner = write.owner if write.status == "running" else current.owner
    return StoredTask(task_id, write.task, write.status, write.attempts, current.created_at,
                      now, now + ttl, owner, write.result, write.error,
                      (*current.history, change)[-HISTORY_LIMIT:])

