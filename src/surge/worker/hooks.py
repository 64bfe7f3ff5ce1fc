"""Policy around the consumer loop, as typed hooks (dramatiq's middleware idea, without
string-dispatched method names).

The loop calls a ``WorkerHook`` at each step of a message's life; result recording, counters
and logging are hooks, so the loop itself only moves messages. ``HookChain`` calls hooks in
order. A hook that raises in ``admit``, ``on_start`` or ``on_success`` fails the attempt (the
message is retried), so a result that could not be recorded is never acknowledged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from surge.envelope import TaskEnvelope
from surge.queue.interface import ReceivedMessage
from surge.results.interface import ResultStore
from surge.worker.retry import DeadLetterNow, LeaveForRedrive, Retry, RetryDecision
from surge.worker.stats import WorkerStats

log = logging.getLogger("surge.worker")


@dataclass(frozen=True, slots=True)
class Job:
    """A decoded message being worked on."""

    message: ReceivedMessage
    envelope: TaskEnvelope

    @property
    def attempt(self) -> int:
        return self.message.receive_count


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message sent to the dead-letter queue; ``task`` is empty when it could not be read."""

    message: ReceivedMessage
    task_id: str
    task: str
    reason: str


class WorkerHook(Protocol):
    async def on_received(self, message: ReceivedMessage) -> None: ...

    async def admit(self, job: Job) -> bool:
        """False: the task must not run (it succeeded already, or another copy of it holds
        it); the delivery is acknowledged without running it. The result recorder records
        ``running`` here, in the same atomic write as the check."""
        ...

    async def on_duplicate(self, job: Job) -> None: ...

    async def on_start(self, job: Job) -> None: ...

    async def on_success(self, job: Job, result: Any) -> None: ...

    async def on_failure(self, job: Job, error: str, decision: RetryDecision) -> None: ...

    async def on_dead_letter(self, dead: DeadLetter) -> None: ...

    async def on_handed_back(self, message: ReceivedMessage) -> None: ...

    async def on_settled(self, message: ReceivedMessage) -> None:
        """The message left this worker: deleted, handed back, retried later or dead."""
        ...


class NoopHook:
    """A hook that does nothing: subclass it and override the steps you care about."""

    async def on_received(self, message: ReceivedMessage) -> None:
        return None

    async def admit(self, job: Job) -> bool:
        return True

    async def on_duplicate(self, job: Job) -> None:
        return None

    async def on_start(self, job: Job) -> None:
        return None

    async def on_success(self, job: Job, result: Any) -> None:
        return None

    async def on_failure(self, job: Job, error: str, decision: RetryDecision) -> None:
        return None

    async def on_dead_letter(self, dead: DeadLetter) -> None:
        return None

    async def on_handed_back(self, message: ReceivedMessage) -> None:
        return None

    async def on_settled(self, message: ReceivedMessage) -> None:
        return None


class HookChain:
    """Calls every hook in order; ``admit`` is true only if every hook admits."""

    def __init__(self, hooks: list[WorkerHook]) -> None:
        self.hooks = hooks

    async def on_received(self, message: ReceivedMessage) -> None:
        for hook in self.hooks:
            await hook.on_received(message)

    async def admit(self, job: Job) -> bool:
        for hook in self.hooks:
            if not await hook.admit(job):
                return False
        return True

    async def on_duplicate(self, job: Job) -> None:
        for hook in self.hooks:
            await hook.on_duplicate(job)

    async def on_start(self, job: Job) -> None:
        for hook in self.hooks:
            await hook.on_start(job)

    async def on_success(self, job: Job, result: Any) -> None:
        for hook in self.hooks:
            await hook.on_success(job, result)

    async def on_failure(self, job: Job, error: str, decision: RetryDecision) -> None:
        for hook in self.hooks:
            await hook.on_failure(job, error, decision)

    async def on_dead_letter(self, dead: DeadLetter) -> None:
        for hook in self.hooks:
            await hook.on_dead_letter(dead)

    async def on_handed_back(self, message: ReceivedMessage) -> None:
        for hook in self.hooks:
            await hook.on_handed_back(message)

    async def on_settled(self, message: ReceivedMessage) -> None:
        for hook in self.hooks:
            await hook.on_settled(message)


class ResultRecorder(NoopHook):
    """Task status in the result store: running → succeeded | failed | dead; and the
    duplicate check, made by the store in the same write as ``running``: a task that
    succeeded is not run again, nor a second copy of a task while the first holds it
    (``surge.results.rules``)."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store

    async def admit(self, job: Job) -> bool:
        envelope = job.envelope
        # The send id names the copy through the dead-letter queue and back; bodies sent by
        # other clients have none, and their message id stands in.
        owner = envelope.send_id or job.message.message_id
        return await self.store.mark_running(envelope.id, envelope.task, job.attempt, owner)

    async def on_success(self, job: Job, result: Any) -> None:
        await self.store.mark_succeeded(job.envelope.id, job.envelope.task, job.attempt, result)

    async def on_failure(self, job: Job, error: str, decision: RetryDecision) -> None:
        envelope = job.envelope
        if isinstance(decision, Retry):
            await self.store.mark_failed(envelope.id, envelope.task, job.attempt, error)
        elif isinstance(decision, LeaveForRedrive):
            await self.store.mark_dead(envelope.id, envelope.task, job.attempt, decision.reason)
        # DeadLetterNow is recorded by on_dead_letter once the message is in the DLQ.

    async def on_dead_letter(self, dead: DeadLetter) -> None:
        await self.store.mark_dead(
            dead.task_id, dead.task, dead.message.receive_count, dead.reason
        )


class StatsRecorder(NoopHook):
    def __init__(self, stats: WorkerStats) -> None:
        self.stats = stats

    async def on_received(self, message: ReceivedMessage) -> None:
        self.stats.received += 1
        self.stats.in_flight += 1

    async def on_duplicate(self, job: Job) -> None:
        self.stats.duplicates += 1

    async def on_success(self, job: Job, result: Any) -> None:
        self.stats.processed += 1

    async def on_failure(self, job: Job, error: str, decision: RetryDecision) -> None:
        self.stats.failed += 1
        if isinstance(decision, Retry):
            self.stats.retried += 1
        elif isinstance(decision, LeaveForRedrive):
            self.stats.dead_lettered += 1

    async def on_dead_letter(self, dead: DeadLetter) -> None:
        self.stats.dead_lettered += 1

    async def on_handed_back(self, message: ReceivedMessage) -> None:
        self.stats.handed_back += 1

    async def on_settled(self, message: ReceivedMessage) -> None:
        self.stats.in_flight -= 1


class FailureLogger(NoopHook):
    async def on_failure(self, job: Job, error: str, decision: RetryDecision) -> None:
        envelope = job.envelope
        if isinstance(decision, Retry):
            log.warning("task %s %s attempt %d failed, retry in %ds: %s", envelope.task,
                        envelope.id, job.attempt, decision.delay_seconds, error)
        elif isinstance(decision, LeaveForRedrive):
            log.error("task %s %s gave up, left for redrive to the dead-letter queue: %s",
                      envelope.task, envelope.id, decision.reason)
        elif isinstance(decision, DeadLetterNow):
            log.error("task %s %s failed permanently: %s", envelope.task, envelope.id, error)

    async def on_dead_letter(self, dead: DeadLetter) -> None:
        log.error("message %s (task %r id %s) dead-lettered: %s",
                  dead.message.message_id, dead.task, dead.task_id, dead.reason)
