"""The result store in one process's memory: the same rules as the others, for tests and
for one-process setups that need no status across processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson

from surge.results.interface import KeyBinding, TaskRecord
from surge.results.rules import StatusWrite, StoredTask, apply, queued_task

Clock = Callable[[], float]


class MemoryResultStore:
    def __init__(self, ttl: float = 7 * 86400.0, *, clock: Clock = time.time) -> None:
        self.ttl = ttl
        self._clock = clock
        self._tasks: dict[str, StoredTask] = {}
        self._keys: dict[str, tuple[KeyBinding, float]] = {}  # binding, expires_at

    async def mark_queued(self, records: list[tuple[str, str]]) -> None:
        now = self._clock()
        for task_id, task in records:
            self._insert_queued(task_id, task, now)

    async def bind_key(self, key: str, task_id: str, task: str, fingerprint: str,
                       ttl: float) -> KeyBinding:
        now = self._clock()
        bound = self._keys.get(key)
        if bound is not None and bound[1] > now:
            return replace(bound[0], created=False)
        binding = KeyBinding(task_id, fingerprint, created=True)
        self._keys[key] = (binding, now + ttl)
        self._insert_queued(task_id, task, now)
        return binding

    async def mark_key_sent(self, key: str) -> None:
        bound = self._keys.get(key)
        if bound is not None:
            self._keys[key] = (replace(bound[0], sent=True), bound[1])

    async def mark_running(self, task_id: str, task: str, attempt: int, owner: str) -> bool:
        return self._apply(task_id, StatusWrite(task, "running", attempt, owner=owner))

    async def mark_succeeded(self, task_id: str, task: str, attempts: int, result: Any) -> None:
        self._apply(task_id, StatusWrite(task, "succeeded", attempts, result=orjson.dumps(result)))

    async def mark_failed(self, task_id: str, task: str, attempts: int, error: str) -> None:
        self._apply(task_id, StatusWrite(task, "failed", attempts, error=error))

    async def mark_dead(self, task_id: str, task: str, attempts: int, error: str) -> None:
        self._apply(task_id, StatusWrite(task, "dead", attempts, error=error))

    async def get(self, task_id: str) -> TaskRecord | None:
        stored = self._current(task_id, self._clock())
        if stored is None:
            return None
        return stored.record(orjson.loads(stored.result) if stored.result is not None else None)

    async def close(self) -> None:
        return None

    def _current(self, task_id: str, now: float) -> StoredTask | None:
        stored = self._tasks.get(task_id)
        return stored if stored is not None and stored.expires_at > now else None

    def _insert_queued(self, task_id: str, task: str, now: float) -> None:
        if self._current(task_id, now) is None:
            self._tasks[task_id] = queued_task(task_id, task, now, self.ttl)

    def _apply(self, task_id: str, write: StatusWrite) -> bool:
        now = self._clock()
        after = apply(self._current(task_id, now), task_id, write, now, self.ttl)
        if after is None:
            return False
        self._tasks[task_id] = after
        return True
