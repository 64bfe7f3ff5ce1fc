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
from surge.errors import ResultStoreError
from surge.queue.client.memory import MemoryQueueClient
from surge.queue.interface import OutgoingMessage, QueueClient
from surge.results.interface import FINAL_STATUSES, TaskRecord, TaskStatus
from surge.worker.envelope import encode_envelope

T = TypeVar("T")


class MemoryResultStore:
    """The ResultStore Protocol in a dict, keeping every transition for assertions."""

    def __init__(self) -> None:
        self.records: dict[str, TaskRecord] = {}
        self.history: list[tuple[str, TaskStatus, int]] = []
        self.fail_writes = False

    async def mark_queued(self, records: list[tuple[str, str]]) -> None:
        for task_id, task in records:
            if task_id not in self.records:
                self._write(task_id, task, "queued", 0)

    async def mark_running(self, task_id: str, task: str, attempt: int) -> None:
        self._write(task_id, task, "running", attempt)

    async def mark_succeeded(self, task_id: str, task: str, attempts: int, result: Any) -> None:
        orjson.dumps(result)  # the real store must serialize it
        self._write(task_id, task, "succeeded", attempts, result=result)

    async def mark_failed(self, task_id: str, task: str, attempts: int, error: str) -> None:
        self._write(task_id, task, "failed", attempts, error=error)

    async def mark_dead(self, task_id: str, task: str, attempts: int, error: str) -> None:
        self._write(task_id, task, "dead", attempts, error=error)

    async def get(self, task_id: str) -> TaskRecord | None:
        return self.records.get(task_id)

    async def close(self) -> None:
        return None

    def statuses(self, task_id: str) -> list[TaskStatus]:
        return [status for tid, status, _ in self.history if tid == task_id]

    def _write(self, task_id: str, task: str, status: TaskStatus, attempts: int,
               result: Any = None, error: str | None = None) -> None:
        if self.fail_writes:
            raise ResultStoreError("store is down")
        existing = self.records.get(task_id)
        if existing is not None and existing.status in FINAL_STATUSES:
            return
        now = time.time()
        created = existing.created_at if existing else now
        self.records[task_id] = TaskRecord(task_id, task, status, attempts, created, now,
                                           result, error)
        self.history.append((task_id, status, attempts))


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
    await client.send(queue, OutgoingMessage(encode_envelope(task, payload, task_id, time.time())))


async def enqueue_many(client: QueueClient, items: list[tuple[str, Any, str]],
                       queue: str = "jobs") -> None:
    for start in range(0, len(items), 10):
        chunk = items[start:start + 10]
        await client.send_batch(queue, [
            OutgoingMessage(encode_envelope(task, payload, task_id, time.time()))
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
