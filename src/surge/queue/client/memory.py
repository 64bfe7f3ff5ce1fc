"""The in-memory queue backend: SQS semantics in one process, for tests of worker logic.

``MemoryQueue`` is the pure part — one queue's messages, their visibility deadlines, receive
counts, FIFO groups and redrive — driven by an explicit ``now``. ``MemoryQueueClient`` wraps
a set of them in the async ``QueueClient`` verbs and adds long polling that wakes on send.
Time comes from an injected clock, so visibility and redrive are tested without sleeping.

A message's state is derived from two fields rather than stored separately, so the states
cannot disagree: *visible* when ``visible_at <= now``; *in flight* when it has a receipt
handle and ``visible_at > now``; *delayed* when never received and ``visible_at > now``.
Deleted and dead-lettered messages leave the queue's dict.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from surge.errors import QueueError, QueueUnavailable
from surge.queue.client import rules
from surge.queue.interface import (
    BatchFailure,
    OutgoingMessage,
    ReceivedMessage,
    SendResult,
)

Clock = Callable[[], float]

# A waiting long poll re-checks at least this often, so deadlines reached on an injected
# clock (which fires no event) are noticed too.
_LONG_POLL_RECHECK = 0.5


@dataclass(slots=True)
class _Message:
    message_id: str
    body: str
    md5_of_body: str
    sent_at: float
    visible_at: float
    message_attributes: dict[str, dict[str, str]]
    group_id: str | None = None
    deduplication_id: str | None = None
    sequence_number: str | None = None
    receive_count: int = 0
    first_received_at: float | None = None
    receipt_handle: str | None = None  # the latest one; older handles are stale


@dataclass(slots=True)
class MemoryQueue:
    """One queue's state. Every method takes ``now`` (epoch seconds) and never blocks."""

    name: str
    attributes: dict[str, str]
    created_at: float
    messages: dict[str, _Message] = field(default_factory=dict)
    dead_letter_sink: Callable[[str, _Message, float], bool] | None = None
    _sequence: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _deduplication: dict[str, tuple[float, SendResult]] = field(default_factory=dict)

    @property
    def fifo(self) -> bool:
        return self.attributes.get("FifoQueue", "false").lower() == "true"

    @property
    def redrive_policy(self) -> rules.RedrivePolicy | None:
        text = self.attributes.get("RedrivePolicy")
        return rules.parse_redrive_policy(text) if text else None

    def send(self, message: OutgoingMessage, now: float) -> SendResult:
        rules.check_outgoing_message(
            message, fifo=self.fifo, max_size=int(self.attributes["MaximumMessageSize"])
        )
        deduplication_id = self._deduplication_id(message)
        if deduplication_id is not None:
            previous = self._deduplication.get(deduplication_id)
            if previous is not None and previous[0] > now:
                return previous[1]
        delay = (
            message.delay_seconds
            if message.delay_seconds is not None
            else int(self.attributes["DelaySeconds"])
        )
        stored = _Message(
            message_id=str(uuid.uuid4()),
            body=message.body,
            md5_of_body=rules.md5_hex(message.body),
            sent_at=now,
            visible_at=now + delay,
            message_attributes=dict(message.attributes),
            group_id=message.group_id,
            deduplication_id=deduplication_id,
            sequence_number=f"{next(self._sequence):020d}" if self.fifo else None,
        )
        self.messages[stored.message_id] = stored
        result = SendResult(stored.message_id, stored.md5_of_body, stored.sequence_number)
        if deduplication_id is not None:
            expiry = now + rules.FIFO_DEDUPLICATION_WINDOW
            self._deduplication[deduplication_id] = (expiry, result)
        return result

    def accept_dead_letter(self, message: _Message, now: float) -> None:
        """Take a message redriven from a source queue: same id and body, visible at once."""
        message.visible_at = now
        message.receipt_handle = None
        self.messages[message.message_id] = message

    def receive(
        self, max_messages: int, visibility_timeout: int | None, now: float
    ) -> list[ReceivedMessage]:
        self._expire(now)
        timeout = (
            visibility_timeout
            if visibility_timeout is not None
            else int(self.attributes["VisibilityTimeout"])
        )
        policy = self.redrive_policy
        busy_groups = {m.group_id for m in self.messages.values() if self._in_flight(m, now)}
        received: list[ReceivedMessage] = []
        for message in list(self.messages.values()):
            if len(received) >= max_messages:
                break
            if message.visible_at > now:
                if self.fifo:  # a later message of a group never overtakes an earlier one
                    busy_groups.add(message.group_id)
                continue
            if self.fifo and message.group_id in busy_groups:
                continue
            if policy is not None and self._redrive_if_received_too_often(message, policy, now):
                continue
            received.append(self._deliver(message, timeout, now))
        return received

    def delete(self, receipt_handle: str) -> None:
        message = self._message_for_handle(receipt_handle)
        # A stale handle (the message was received again since) deletes nothing, so a slow
        # consumer cannot delete a message another consumer now holds.
        if message is not None and message.receipt_handle == receipt_handle:
            del self.messages[message.message_id]

    def change_visibility(self, receipt_handle: str, timeout: int, now: float) -> None:
        rules.check_visibility_timeout(timeout)
        message = self._message_for_handle(receipt_handle)
        if (
            message is None
            or message.receipt_handle != receipt_handle
            or not self._in_flight(message, now)
        ):
            raise QueueError("MessageNotInflight", "the message is not in flight")
        message.visible_at = now + timeout

    def seconds_until_next_visible(self, now: float) -> float | None:
        deadlines = [m.visible_at for m in self.messages.values() if m.visible_at > now]
        return min(deadlines) - now if deadlines else None

    def counts(self, now: float) -> dict[str, str]:
        visible = in_flight = delayed = 0
        for message in self.messages.values():
            if message.visible_at <= now:
                visible += 1
            elif message.receipt_handle is not None:
                in_flight += 1
            else:
                delayed += 1
        return {
            "ApproximateNumberOfMessages": str(visible),
            "ApproximateNumberOfMessagesNotVisible": str(in_flight),
            "ApproximateNumberOfMessagesDelayed": str(delayed),
        }

    def _deduplication_id(self, message: OutgoingMessage) -> str | None:
        if not self.fifo:
            return None
        if message.deduplication_id:
            return message.deduplication_id
        if self.attributes.get("ContentBasedDeduplication", "false").lower() == "true":
            return rules.content_deduplication_id(message.body)
        raise QueueError(
            "InvalidParameterValue",
            "FIFO queue without ContentBasedDeduplication needs a MessageDeduplicationId",
        )

    def _deliver(self, message: _Message, timeout: int, now: float) -> ReceivedMessage:
        message.receive_count += 1
        if message.first_received_at is None:
            message.first_received_at = now
        message.visible_at = now + timeout
        message.receipt_handle = _encode_handle(self.name, message.message_id,
                                                message.receive_count)
        attributes = {
            "SenderId": "000000000000",
            "SentTimestamp": str(int(message.sent_at * 1000)),
            "ApproximateReceiveCount": str(message.receive_count),
            "ApproximateFirstReceiveTimestamp": str(int(message.first_received_at * 1000)),
        }
        if message.group_id is not None:
            attributes["MessageGroupId"] = message.group_id
        if message.deduplication_id is not None:
            attributes["MessageDeduplicationId"] = message.deduplication_id
        if message.sequence_number is not None:
            attributes["SequenceNumber"] = message.sequence_number
        return ReceivedMessage(
            message_id=message.message_id,
            receipt_handle=message.receipt_handle,
            body=message.body,
            md5_of_body=message.md5_of_body,
            attributes=attributes,
            message_attributes={k: dict(v) for k, v in message.message_attributes.items()},
        )

    def _redrive_if_received_too_often(
        self, message: _Message, policy: rules.RedrivePolicy, now: float
    ) -> bool:
        """Move a message received maxReceiveCount times to the dead-letter queue instead of
        delivering it again (False: not yet, or the dead-letter queue does not exist)."""
        if message.receive_count < policy.max_receive_count:
            return False
        if self.dead_letter_sink is None or not self.dead_letter_sink(
            policy.dead_letter_queue, message, now
        ):
            return False
        del self.messages[message.message_id]
        return True

    def _expire(self, now: float) -> None:
        oldest_kept = now - int(self.attributes["MessageRetentionPeriod"])
        for message_id in [m.message_id for m in self.messages.values() if m.sent_at < oldest_kept]:
            del self.messages[message_id]
        for key in [k for k, (expiry, _) in self._deduplication.items() if expiry <= now]:
            del self._deduplication[key]

    def _message_for_handle(self, receipt_handle: str) -> _Message | None:
        queue_name, message_id = _decode_handle(receipt_handle)
        if queue_name != self.name:
            raise QueueError("ReceiptHandleIsInvalid", "the receipt handle is for another queue")
        return self.messages.get(message_id)

    @staticmethod
    def _in_flight(message: _Message, now: float) -> bool:
        return message.receipt_handle is not None and message.visible_at > now


def _encode_handle(queue_name: str, message_id: str, receive_count: int) -> str:
    raw = f"{queue_name}\n{message_id}\n{receive_count}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_handle(receipt_handle: str) -> tuple[str, str]:
    try:
        padded = receipt_handle + "=" * (-len(receipt_handle) % 4)
        queue_name, message_id, _ = base64.urlsafe_b64decode(padded).decode().split("\n")
    except (ValueError, UnicodeDecodeError) as exc:
        raise QueueError("ReceiptHandleIsInvalid", "not a receipt handle") from exc
    return queue_name, message_id


class _LoopEvent(asyncio.Event):
    """An event that remembers its loop, so a client used from several loops (one
    ``asyncio.run`` per test) never waits on an event bound to a finished loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop


class MemoryQueueClient:
    """The ``QueueClient`` verbs over in-process ``MemoryQueue`` objects.

    Several clients can share one set of queues (``share_with``), as several processes
    share one SQS queue, so producer and consumer tests can use separate clients.
    """

    def __init__(
        self,
        clock: Clock = time.time,
        *,
        region: str = "us-east-1",
        account_id: str = "000000000000",
        share_with: MemoryQueueClient | None = None,
    ) -> None:
        self._clock = clock
        self._region = region
        self._account_id = account_id
        self._queues: dict[str, MemoryQueue] = share_with._queues if share_with else {}
        self._changed: dict[str, _LoopEvent] = share_with._changed if share_with else {}
        self._closed = False

    def url_for(self, name: str) -> str:
        return f"memory://{self._account_id}/{name}"

    async def create_queue(self, name: str, attributes: dict[str, str] | None = None) -> str:
        self._check_open()
        full = rules.validate_queue_attributes(name, attributes or {})
        existing = self._queues.get(name)
        if existing is not None:
            if any(existing.attributes.get(k) != v for k, v in full.items()):
                raise QueueError("QueueNameExists", f"{name} exists with other attributes")
            return self.url_for(name)
        queue = MemoryQueue(name, full, self._clock())
        queue.dead_letter_sink = self._accept_dead_letter
        self._queues[name] = queue
        return self.url_for(name)

    async def get_queue_url(self, name: str) -> str:
        self._queue(name)
        return self.url_for(name)

    async def send(self, queue: str, message: OutgoingMessage) -> SendResult:
        result = self._queue(queue).send(message, self._clock())
        self._notify(queue)
        return result

    async def send_batch(
        self, queue: str, messages: list[OutgoingMessage]
    ) -> tuple[list[SendResult | None], list[BatchFailure]]:
        target = self._queue(queue)
        rules.check_batch_size(messages)
        results: list[SendResult | None] = []
        failures: list[BatchFailure] = []
        now = self._clock()
        for index, message in enumerate(messages):
            try:
                results.append(target.send(message, now))
            except QueueError as exc:
                results.append(None)
                failures.append(BatchFailure(index, exc.code, str(exc), exc.sender_fault))
        self._notify(queue)
        return results, failures

    async def receive(
        self,
        queue: str,
        max_messages: int = 1,
        wait_seconds: float = 0,
        visibility_timeout: int | None = None,
    ) -> list[ReceivedMessage]:
        rules.check_receive_parameters(max_messages, wait_seconds, visibility_timeout)
        source = self._queue(queue)
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + wait_seconds
        while True:
            now = self._clock()
            received = source.receive(max_messages, visibility_timeout, now)
            remaining = give_up_at - loop.time()
            if received or remaining <= 0:
                return received
            next_visible = source.seconds_until_next_visible(now)
            pause = min(remaining, _LONG_POLL_RECHECK, next_visible or math.inf)
            changed = self._changed.get(queue)
            if changed is None or changed.loop is not loop:
                changed = self._changed[queue] = _LoopEvent(loop)
            try:
                await asyncio.wait_for(changed.wait(), pause)
            except TimeoutError:
                pass
            self._check_open()

    async def delete(self, queue: str, receipt_handle: str) -> None:
        self._queue(queue).delete(receipt_handle)

    async def delete_batch(self, queue: str, receipt_handles: list[str]) -> list[BatchFailure]:
        target = self._queue(queue)
        rules.check_batch_size(receipt_handles)
        failures = []
        for index, handle in enumerate(receipt_handles):
            try:
                target.delete(handle)
            except QueueError as exc:
                failures.append(BatchFailure(index, exc.code, str(exc), exc.sender_fault))
        return failures

    async def change_visibility(self, queue: str, receipt_handle: str, timeout: int) -> None:
        self._queue(queue).change_visibility(receipt_handle, timeout, self._clock())
        self._notify(queue)

    async def change_visibility_batch(
        self, queue: str, entries: list[tuple[str, int]]
    ) -> list[BatchFailure]:
        target = self._queue(queue)
        rules.check_batch_size(entries)
        failures = []
        now = self._clock()
        for index, (handle, timeout) in enumerate(entries):
            try:
                target.change_visibility(handle, timeout, now)
            except QueueError as exc:
                failures.append(BatchFailure(index, exc.code, str(exc), exc.sender_fault))
        self._notify(queue)
        return failures

    async def get_attributes(self, queue: str, names: list[str] | None = None) -> dict[str, str]:
        source = self._queue(queue)
        now = self._clock()
        everything = {
            **source.attributes,
            **source.counts(now),
            "QueueArn": rules.queue_arn(queue, self._region, self._account_id),
            "CreatedTimestamp": str(int(source.created_at)),
            "LastModifiedTimestamp": str(int(source.created_at)),
        }
        if not names or "All" in names:
            return everything
        unknown = [n for n in names if n not in everything and n not in _OPTIONAL_ATTRIBUTES]
        if unknown:
            raise QueueError("InvalidAttributeName", f"unknown attribute {unknown[0]}")
        return {n: everything[n] for n in names if n in everything}

    async def close(self) -> None:
        self._closed = True

    def _accept_dead_letter(self, queue_name: str, message: _Message, now: float) -> bool:
        dead_letter_queue = self._queues.get(queue_name)
        if dead_letter_queue is None:
            return False
        dead_letter_queue.accept_dead_letter(message, now)
        self._notify(queue_name)
        return True

    def _queue(self, name: str) -> MemoryQueue:
        self._check_open()
        queue = self._queues.get(name)
        if queue is None:
            raise QueueError("QueueDoesNotExist", f"no queue named {name}")
        return queue

    def _notify(self, name: str) -> None:
        changed = self._changed.pop(name, None)
        if changed is not None:
            changed.set()

    def _check_open(self) -> None:
        if self._closed:
            raise QueueUnavailable("the queue client is closed")


# Attributes SQS knows but that are absent unless set (asking for them is not an error).
_OPTIONAL_ATTRIBUTES = frozenset(
    {"RedrivePolicy", "RedriveAllowPolicy", "FifoQueue", "ContentBasedDeduplication", "Policy",
     "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds", "SqsManagedSseEnabled",
     "DeduplicationScope", "FifoThroughputLimit"}
)
