"""What a worker learns about its queue before consuming: visibility timeout, dead-letter
queue and redrive limit (from the queue's own attributes, so one source of truth)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson

from surge.config.settings import WorkerSettings
from surge.queue.interface import QueueClient
from surge.queue.naming import default_dead_letter_queue

DEFAULT_VISIBILITY_TIMEOUT = 30.0  # SQS's default, used when the backend does not say


@dataclass(frozen=True, slots=True)
class RedrivePolicy:
    dead_letter_queue: str | None
    max_receive_count: int | None


@dataclass(frozen=True, slots=True)
class QueueBinding:
    name: str
    visibility_timeout: float  # what a received message gets
    receive_visibility: int | None  # passed to ReceiveMessage (None: the queue's own)
    dead_letter_queue: str
    max_receive_count: int | None  # None: the queue never redrives


def parse_redrive_policy(text: str | None) -> RedrivePolicy:
    """``{"deadLetterTargetArn": "arn:aws:sqs:REGION:ACCOUNT:NAME", "maxReceiveCount": 5}``
    (the count arrives as a number or a string depending on the backend)."""
    if not text:
        return RedrivePolicy(None, None)
    try:
        policy = orjson.loads(text)
    except orjson.JSONDecodeError:
        return RedrivePolicy(None, None)
    if not isinstance(policy, dict):
        return RedrivePolicy(None, None)
    arn = policy.get("deadLetterTargetArn")
    target = arn.rsplit(":", 1)[-1] if isinstance(arn, str) and arn else None
    try:
        count: int | None = int(policy.get("maxReceiveCount"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        count = None
    return RedrivePolicy(target, count)


def make_binding(worker: WorkerSettings, attributes: dict[str, str]) -> QueueBinding:
    redrive = parse_redrive_policy(attributes.get("RedrivePolicy"))
    if worker.visibility_timeout is not None:
        visibility = worker.visibility_timeout
        receive_visibility: int | None = max(1, math.ceil(visibility))
    else:
        visibility = float(attributes.get("VisibilityTimeout", DEFAULT_VISIBILITY_TIMEOUT))
        receive_visibility = None
    return QueueBinding(
        name=worker.queue,
        visibility_timeout=visibility,
        receive_visibility=receive_visibility,
        dead_letter_queue=(redrive.dead_letter_queue
                           or default_dead_letter_queue(worker.queue)),
        max_receive_count=redrive.max_receive_count,
    )


async def bind_queue(client: QueueClient, worker: WorkerSettings) -> QueueBinding:
    attributes = await client.get_attributes(worker.queue, ["VisibilityTimeout", "RedrivePolicy"])
    return make_binding(worker, attributes)
