"""Message move tasks (StartMessageMoveTask): redrive a dead-letter queue's messages back to
their source queues, or to a chosen destination, at a chosen rate.

Tasks are journaled with the messages they move: each step's moves and the task's new count
commit together, so after a restart (even kill -9) a running task resumes where its last
commit left it, and ListMessageMoveTasks still shows the finished ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from surge.errors import QueueError
from surge.ids import random_uuid
from surge.queue.server import rules
from surge.queue.server.broker import Broker

TICK_SECONDS = 0.1
UNLIMITED_PER_TICK = 1000  # no rate given: as fast as this, still yielding to other requests


@dataclass(slots=True)
class MoveTask:
    handle: str
    source: str
    destination: str | None  # None: back to each message's source queue
    rate: int | None  # messages per second
    started_at: int
    to_move: int
    moved: int = 0
    status: str = "RUNNING"  # RUNNING, COMPLETED, CANCELLED, FAILED
    failure: str | None = None


class MoveJournal(Protocol):
    def move_task_saved(self, task: MoveTask) -> None: ...


class MessageMover:
    def __init__(self, broker: Broker, durable: Callable[[], Awaitable[None]],
                 wake: Callable[[str, int], None], clock: Callable[[], int],
                 journal: MoveJournal | None = None) -> None:
        self.broker = broker
        self._durable = durable
        self._journal = journal
        self._wake = wake  # long-polling receivers of a queue that got messages
        self._clock = clock
        self._tasks: dict[str, MoveTask] = {}
        self._runners: set[asyncio.Task[None]] = set()

    def start(self, source: str, destination: str | None, rate: int | None) -> MoveTask:
        if not self.broker.dead_letter_sources(source):
            raise rules.invalid("Source queue must be configured as a Dead Letter Queue.")
        if any(t.source == source and t.status == "RUNNING" for t in self._tasks.values()):
            raise rules.invalid("There is already a task running. Only one active task is "
                                "allowed for a source queue arn at a given time.")
        visible, _, _ = self.broker.counts(source, self._clock())
        task = MoveTask(random_uuid(), source, destination, rate, self._clock(), visible)
        self._tasks[task.handle] = task
        self._save(task)
        self._launch(task)
        return task

    def resume(self, tasks: list[MoveTask]) -> None:
        """After a restart: take back the journaled tasks and go on with the running ones."""
        for task in tasks:
            self._tasks[task.handle] = task
            if task.status == "RUNNING":
                self._launch(task)

    def _launch(self, task: MoveTask) -> None:
        runner = asyncio.get_running_loop().create_task(self._run(task))
        self._runners.add(runner)
        runner.add_done_callback(self._runners.discard)

    def _save(self, task: MoveTask) -> None:
        if self._journal is not None:
            self._journal.move_task_saved(task)

    def tasks_of(self, source: str) -> list[MoveTask]:
        """The tasks of a source queue, most recent first."""
        tasks = [t for t in self._tasks.values() if t.source == source]
        return sorted(tasks, key=lambda t: t.started_at, reverse=True)

    def cancel(self, handle: str) -> MoveTask:
        task = self._tasks.get(handle)
        if task is None:
            raise QueueError("ResourceNotFoundException", "The resource that you specified "
                             "for the TaskHandle parameter doesn't exist.")
        if task.status != "RUNNING":
            raise rules.invalid("Only active tasks can be cancelled.")
        task.status = "CANCELLED"
        self._save(task)
        return task

    def stop(self) -> None:
        for runner in self._runners:
            runner.cancel()

    async def _run(self, task: MoveTask) -> None:
        per_tick = max(1, int(task.rate * TICK_SECONDS)) if task.rate else UNLIMITED_PER_TICK
        try:
            while task.status == "RUNNING":
                limit = min(per_tick, task.to_move - task.moved)
                moved = self._step(task, limit) if limit > 0 else 0
                task.moved += moved  # before the await: a cancel meanwhile reports it
                if moved == 0:
                    task.status = "COMPLETED"
                self._save(task)  # in the same commit as the moves it counts
                await self._durable()
                if task.status != "RUNNING":
                    break
                await asyncio.sleep(TICK_SECONDS)
        except QueueError as exc:  # a queue deleted under the task
            task.status, task.failure = "FAILED", str(exc)
            self._save(task)

    def _step(self, task: MoveTask, limit: int) -> int:
        now = self._clock()
        if task.destination is not None:
            moved = self.broker.move_messages(task.source, task.destination, limit, now)
            self._wake(task.destination, moved)
            return moved
        sources = self.broker.dead_letter_sources(task.source)
        moved = 0
        for message in list(self.broker.queue(task.source).messages.values()):
            if moved >= limit:
                break
            origin = message.origin_queue if message.origin_queue in self.broker.queues \
                else (sources[0] if len(sources) == 1 else None)
            if origin is not None:
                moved += self.broker.move_message(task.source, message.seq, origin, now)
                self._wake(origin, 1)
        return moved
