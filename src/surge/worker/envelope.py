"""Decoding the task envelope the gateway sends: ``{"task", "payload", "timestamp", "id"}``.

Pure: a message body in, a ``TaskEnvelope`` or a ``PoisonMessage`` (with the reason it can
never succeed) out. A poison message goes to the dead-letter queue at once.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class TaskEnvelope:
    id: str
    task: str
    payload: Any
    timestamp: float | None


@dataclass(frozen=True, slots=True)
class PoisonMessage:
    """A body that no retry can fix; ``task_id``/``task`` are kept when they could be read."""

    reason: str
    task_id: str
    task: str = ""


def decode_envelope(
    body: str, message_id: str, known_tasks: Container[str]
) -> TaskEnvelope | PoisonMessage:
    """The envelope of ``body``; ``message_id`` stands in for a missing ``id``."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return PoisonMessage(f"undecodable body: not JSON ({exc})", message_id)
    if not isinstance(document, dict):
        return PoisonMessage(
            f"undecodable body: expected a JSON object, got {type(document).__name__}",
            message_id,
        )
    task_id = document.get("id")
    if not isinstance(task_id, str) or not task_id:
        task_id = message_id
    task = document.get("task")
    if task is None:
        return PoisonMessage("missing 'task' field", task_id)
    if not isinstance(task, str):
        return PoisonMessage(f"'task' must be a string, got {task!r}", task_id)
    if task not in known_tasks:
        return PoisonMessage(f"unknown task {task!r}", task_id, task)
    timestamp = document.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        timestamp = None
    return TaskEnvelope(task_id, task, document.get("payload"), timestamp)


def encode_envelope(task: str, payload: Any, task_id: str, timestamp: float) -> str:
    """The body the gateway sends (used by tests and benchmarks to enqueue like it)."""
    return orjson.dumps(
        {"task": task, "payload": payload, "timestamp": timestamp, "id": task_id}
    ).decode()
