"""The configured queues: created at start-up through the queue client (dead-letter queue
first, then the queue with its RedrivePolicy), and their depth read for ``/v1/state``."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from surge.config.settings import QueueSettings, Settings
from surge.config.types import HostPort
from surge.errors import SurgeError
from surge.queue.interface import QueueClient
from surge.queue.naming import dead_letter_queue_name
from surge.supervisor.logs import LogSink

STATS_TIMEOUT = 2.0
DEAD_LETTER_RETENTION = 14 * 86400  # SQS's maximum: keep failures long enough to look at
STAT_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateAgeOfOldestMessage",
]


def queue_attributes(queue: QueueSettings) -> dict[str, str]:
    """SQS attributes from the config form (whole seconds, as SQS wants them)."""
    attributes = {
        "VisibilityTimeout": str(int(queue.visibility_timeout)),
        "MessageRetentionPeriod": str(int(queue.retention)),
        "DelaySeconds": str(int(queue.delay)),
        "ReceiveMessageWaitTimeSeconds": str(int(queue.receive_wait)),
        "MaximumMessageSize": str(queue.max_message_size),
    }
    if queue.fifo:
        attributes["FifoQueue"] = "true"
        if queue.content_based_deduplication:
            attributes["ContentBasedDeduplication"] = "true"
    return attributes


def redrive_policy(dead_letter_arn: str, max_receive_count: int) -> str:
    return orjson.dumps(
        {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": max_receive_count}
    ).decode()


class QueueBootstrap:
    def __init__(self, settings: Settings, queue_listen: HostPort, log: LogSink) -> None:
        self._backend = settings.queue_backend.model_copy(update={"listen": queue_listen})
        self._queues = settings.queues
        self._log = log
        self._client: QueueClient | None = None

    async def client(self) -> QueueClient:
        if self._client is None:
            from surge.queue.client import open_queue_client

            self._client = open_queue_client(self._backend)
        return self._client

    async def create_configured(self) -> bool:
        if not self._queues:
            return True
        try:
            client = await self.client()
            for name, queue in self._queues.items():
                await self._create(client, name, queue)
        except (SurgeError, ImportError) as exc:
            self._log.event("queue_setup_failed", level="error", error=str(exc))
            return False
        return True

    async def _create(self, client: QueueClient, name: str, queue: QueueSettings) -> None:
        attributes = queue_attributes(queue)
        dead_letter = dead_letter_queue_name(name, queue)
        if dead_letter is not None and queue.max_receive_count is not None:
            dlq_attributes = {**attributes, "MessageRetentionPeriod": str(DEAD_LETTER_RETENTION)}
            await client.create_queue(dead_letter, dlq_attributes)
            arn = (await client.get_attributes(dead_letter, ["QueueArn"])).get("QueueArn")
            attributes["RedrivePolicy"] = redrive_policy(
                arn or self._arn(dead_letter), queue.max_receive_count)
        url = await client.create_queue(name, attributes)
        self._log.event("queue_ready", queue=name, url=url, dead_letter_queue=dead_letter)

    def _arn(self, name: str) -> str:
        return f"arn:aws:sqs:{self._backend.region}:{self._backend.account_id}:{name}"

    async def stats(self) -> dict[str, Any]:
        """Depth of every configured queue and its dead-letter queue; errors per queue."""
        names: list[str] = []
        if not self._queues:
            return {}
        for name, queue in self._queues.items():
            names.append(name)
            dead_letter = dead_letter_queue_name(name, queue)
            if dead_letter:
                names.append(dead_letter)
        try:
            client = await self.client()
        except (SurgeError, ImportError) as exc:
            return {name: {"error": str(exc)} for name in names}
        results = await asyncio.gather(*(self._one(client, n) for n in names))
        return dict(zip(names, results, strict=True))

    @staticmethod
    async def _one(client: QueueClient, name: str) -> dict[str, Any]:
        try:
            async with asyncio.timeout(STATS_TIMEOUT):
                attributes = await client.get_attributes(name, ["All"])
        except TimeoutError:
            return {"error": "the queue did not answer in time"}
        except SurgeError as exc:
            return {"error": str(exc)}
        return {key: _number(attributes[key]) for key in STAT_ATTRIBUTES if key in attributes}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _number(value: str) -> int | str:
    return int(value) if value.isdigit() else value
