"""Test doubles for the worker tests: an in-memory result store, and helpers to build
settings and queues."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

from surge.config.loader import validate_settings
from surge.config.settings import Settings
from surge.envelope import encode_envelope
from surge.errors import ResultStoreError
from surge.ids import random_uuid
from surge.queue.client.memory import MemoryQueueClient
from surge.queue.interface import OutgoingMessage, QueueClient
from surge.results import memory
from surge.results.interface import TaskRecord, TaskStatus
from surge.results.rules import StatusWrite

T = TypeVar("T")


class MemoryResultStore(memory.MemoryResultStore):
    """The in-memory result store, with a switch that makes every write fail, and the
    records and status histories at hand for assertions."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_writes = False

    @property
    def records(self) -> dict[str, TaskRecord]:
        return {task_id: stored.record(orjson.loads(stored.result) if stored.result else None)
                for task_id, stored in self._tasks.items()}

    def statuses(self, task_id: str) -> list[TaskStatus]:
        stored = self._tasks.get(task_id)
        return [change.status for change in stored.history] if stored is not None else []

    async def mark_queued(self, records: list[tuple[str, str]]) -> None:
        self._check()
        await super().mark_queued(records)

    def _apply(self, task_id: str, write: StatusWrite) -> bool:
        self._check()
        return super()._apply(task_id, write)

    def _check(self) -> None:
        if self.fail_writes:
            raise ResultStoreError("store is down")


def make_settings(worker: dict[str, Any], queue: dict[str, Any] | None = None,
                  config_dir: str = ".") -> Settings:
    return validate_settings({
        "config_dir": config_dir,
        "queues": {"jobs": queue or {}},
        "workers": {"jobs": {"queue": "jobs", **worker}},
    })


async def create_queue_with_dlq(client: QueueClient, name: str = "jobs",
                                max_receive_count: int | None = 3,
                                visibility_timeout: int = 30) -> None:
    await client.create_queue(f"{name}-dlq")
    attributes = {"VisibilityTimeout": str(visibility_timeout)}
    if max_receive_count is not None:
        arn = f"arn:aws:sqs:us-east-1:000000000000:{name}-dlq"
        attributes["RedrivePolicy"] = orjson.dumps(
            {"deadLetterTargetArn": arn, "maxReceiveCount": max_receive_count}).decode()
    await client.create_queue(name, attributes)


async def enqueue(client: QueueClient, task: str, payload: Any, task_id: str,
                  queue: str = "jobs") -> None:
    body = encode_envelope(task, payload, task_id, time.time(), random_uuid())
    await client.send(queue, OutgoingMessage(body))


async def enqueue_many(client: QueueClient, items: list[tuple[str, Any, str]],
                       queue: str = "jobs") -> None:
    for start in range(0, len(items), 10):
        chunk = items[start:start + 10]
        await client.send_batch(queue, [
            OutgoingMessage(encode_envelope(task, payload, task_id, time.time(), random_uuid()))
            for task, payload, task_id in chunk])


async def wait_until(predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0,
                     interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while True:
        outcome = predicate()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def queue_counts(client: QueueClient, queue: str = "jobs") -> tuple[int, int]:
    """(visible, in flight) as the queue reports them."""
    attributes = await client.get_attributes(
        queue, ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    return (int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]))


def memory_client() -> MemoryQueueClient:
    return MemoryQueueClient()
