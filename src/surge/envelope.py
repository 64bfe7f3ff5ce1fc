"""The task envelope: the one codec of the message body the enqueue route sends and the
workers read, ``{"task", "payload", "timestamp", "id", "send_id"}``.

``id`` is the task's id (the ``Location`` the client polls). ``send_id`` names one send of
it: a client that retries with the same Idempotency-Key gets the same task id, sent again
under a new ``send_id``, so a worker can tell a second copy of the task (refused while the
first holds it) from a redelivery of the same message (run again, as SQS's at-least-once
delivery asks). A body keeps its ``send_id`` through the dead-letter queue and back.

Pure: a message body in, a ``TaskEnvelope`` or a ``PoisonMessage`` (with the reason it can
never succeed) out; a poison message goes to the dead-letter queue at once.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any

import orjson

# orjson writes at most 254 levels of nesting; the envelope object is one of them.
MAX_PAYLOAD_DEPTH = 253


class PayloadTooDeep(ValueError):
    """The payload is nested deeper than ``MAX_PAYLOAD_DEPTH`` levels."""

    def __init__(self) -> None:
        super().__init__(f"the JSON document is nested deeper than {MAX_PAYLOAD_DEPTH} levels")


@dataclass(frozen=True, slots=True)
class TaskEnvelope:
    id: str
    task: str
    payload: Any
    timestamp: float | None
    send_id: str | None = None  # None in bodies not sent by the gateway


@dataclass(frozen=True, slots=True)
class PoisonMessage:
    """A body that no retry can fix; ``task_id``/``task`` are kept when they could be read."""

    reason: str
    task_id: str
    task: str = ""


def encode_envelope(task: str, payload: Any, task_id: str, timestamp: float,
                    send_id: str) -> str:
    """The message body for one send of a task; ``PayloadTooDeep`` if orjson cannot write
    ``payload`` (any value parsed from JSON is otherwise writable)."""
    try:
        return orjson.dumps({"task": task, "payload": payload, "timestamp": timestamp,
                             "id": task_id, "send_id": send_id}).decode()
    except orjson.JSONEncodeError:
        raise PayloadTooDeep() from None


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
    send_id = document.get("send_id")
    if not isinstance(send_id, str) or not send_id:
        send_id = None
    return TaskEnvelope(task_id, task, document.get("payload"), timestamp, send_id)
