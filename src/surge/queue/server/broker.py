"""Every queue and message in memory, and SQS's semantics over them — pure and clock-injected.

The broker never reads a clock or touches storage: callers pass ``now`` (milliseconds) and
every change is reported to a ``Journal`` (the SQLite store, or nothing in tests). The
database is the truth after a restart; the broker is rebuilt from it by ``load_*``.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from surge.errors import QueueError
from surge.ids import random_uuid
from surge.queue.server import rules
from surge.queue.server.lifecycle import Lifecycle, State
from surge.queue.server.receipts import ReceiptHandles


@dataclass(slots=True)
class StoredMessage:
    seq: int  # global send order; FIFO order and SequenceNumber come from it
    message_id: str
    body: str
    md5_of_body: str
    life: Lifecycle
    sender_id: str = ""
    message_attributes: dict[str, Any] = field(default_factory=dict)
    md5_of_message_attributes: str | None = None
    system_attributes: dict[str, Any] = field(default_factory=dict)  # AWSTraceHeader
    md5_of_system_attributes: str | None = None
    group_id: str | None = None
    dedup_id: str | None = None
    origin_queue: str | None = None  # set when dead-lettered: where a redrive sends it back


@dataclass(slots=True)
class Delivery:
    """One message handed out by a receive."""

    message: StoredMessage
    receipt_token: int


class Journal(Protocol):
    """Where the broker reports what must become durable."""

    def queue_saved(self, queue: QueueState) -> None: ...
    def queue_deleted(self, name: str) -> None: ...
    def message_added(self, queue: str, message: StoredMessage) -> None: ...
    def message_changed(self, queue: str, message: StoredMessage) -> None: ...
    def message_removed(self, seq: int) -> None: ...
    def queue_purged(self, queue: str, up_to_seq: int) -> None: ...
    def dedup_recorded(self, queue: str, key: str, message_id: str, seq: int,
                       expires_at: int) -> None: ...


class NullJournal:
    def queue_saved(self, queue: QueueState) -> None: ...
    def queue_deleted(self, name: str) -> None: ...
    def message_added(self, queue: str, message: StoredMessage) -> None: ...
    def message_changed(self, queue: str, message: StoredMessage) -> None: ...
    def message_removed(self, seq: int) -> None: ...
    def queue_purged(self, queue: str, up_to_seq: int) -> None: ...
    def dedup_recorded(self, queue: str, key: str, message_id: str, seq: int,
                       expires_at: int) -> None: ...


@dataclass(slots=True)
class QueueState:
    name: str
    attributes: dict[str, str]
    created_at: int  # seconds
    modified_at: int
    tags: dict[str, str] = field(default_factory=dict)
    purged_at: int = 0  # ms; a second PurgeQueue within 60 s is refused
    messages: dict[int, StoredMessage] = field(default_factory=dict)  # seq order
    ready: deque[int] = field(default_factory=deque)  # standard: visible candidates (may be stale)
    groups: dict[str | None, deque[int]] = field(default_factory=dict)  # FIFO: seqs per group
    timers: list[tuple[int, int]] = field(default_factory=list)  # (visible_at, seq) heap
    dedup: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # → (id, seq, expires)
    dedup_swept_at: int = 0

    @property
    def fifo(self) -> bool:
        return self.attributes.get("FifoQueue") == "true"

    def int_attribute(self, name: str) -> int:
        return int(self.attributes[name])

    @property
    def redrive(self) -> tuple[str, int] | None:
        policy = self.attributes.get("RedrivePolicy")
        if not policy:
            return None
        parsed = orjson.loads(policy)
        return str(parsed["deadLetterTargetArn"]), int(parsed["maxReceiveCount"])

    def add(self, message: StoredMessage) -> None:
        self.messages[message.seq] = message
        if self.fifo:
            self.groups.setdefault(message.group_id, deque()).append(message.seq)
        self.track(message)

    def track(self, message: StoredMessage) -> None:
        """Index a message by when it can next be received. Entries are never removed: a
        reader skips those that no longer match the message (deleted, received again)."""
        if message.life.state is not State.VISIBLE:
            heapq.heappush(self.timers, (message.life.visible_at, message.seq))
        elif not self.fifo:
            self.ready.append(message.seq)

    def clear(self) -> None:
        self.messages.clear()
        self.ready.clear()
        self.timers.clear()
        self.groups.clear()

    def promote(self, now: int) -> None:
        """Move messages whose delay or visibility ran out to the ready line."""
        while self.timers and self.timers[0][0] <= now:
            visible_at, seq = heapq.heappop(self.timers)
            message = self.messages.get(seq)
            if message is not None and message.life.visible_at == visible_at:
                message.life.settle(now)
                if message.life.state is State.VISIBLE and not self.fifo:
                    self.ready.append(seq)

    def next_change_at(self) -> int | None:
        return self.timers[0][0] if self.timers else None


DEDUP_SWEEP_INTERVAL_MS = 60_000  # expired dedup ids are ignored anyway; memory is freed lazily


def arn_queue_name(arn: str) -> str:
    return arn.rsplit(":", 1)[-1]


class Broker:
    def __init__(self, journal: Journal | None = None, *, account_id: str = "000000000000",
                 region: str = "us-east-1", receipts: ReceiptHandles | None = None) -> None:
        self.journal: Journal = journal or NullJournal()
        self.receipts = receipts or ReceiptHandles.ephemeral()
        self.account_id = account_id
        self.region = region
        self.queues: dict[str, QueueState] = {}
        self.next_seq = 1

    # -- queues -----------------------------------------------------------------------------

    def arn(self, name: str) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account_id}:{name}"

    def queue(self, name: str) -> QueueState:
        try:
            return self.queues[name]
        except KeyError:
            raise QueueError(
                "QueueDoesNotExist", "The specified queue does not exist."
            ) from None

    def create_queue(self, name: str, attributes: dict[str, str], tags: dict[str, str],
                     now: int) -> QueueState:
        fifo = name.endswith(".fifo")
        rules.check_queue_name(name, fifo)
        given = rules.validate_queue_attributes(attributes, fifo=fifo, creating=True)
        wanted = dict(rules.DEFAULT_ATTRIBUTES)
        if fifo:
            wanted.update(rules.FIFO_DEFAULT_ATTRIBUTES)
        wanted.update(given)
        rules.check_fifo_combination(wanted)
        existing = self.queues.get(name)
        if existing is not None:
            if any(existing.attributes.get(key) != value for key, value in given.items()):
                raise QueueError(
                    "QueueNameExists",
                    "A queue already exists with the same name and a different value for "
                    "attribute(s)",
                )
            return existing
        self._check_redrive_target(name, wanted)
        seconds = now // 1000
        queue = QueueState(name, wanted, seconds, seconds, tags=dict(tags))
        self.queues[name] = queue
        self.journal.queue_saved(queue)
        return queue

    def _check_redrive_target(self, name: str, attributes: dict[str, str]) -> None:
        policy = attributes.get("RedrivePolicy")
        if not policy:
            return
        target = arn_queue_name(orjson.loads(policy)["deadLetterTargetArn"])
        dlq = self.queues.get(target)
        if dlq is None:
            raise QueueError(
                "InvalidParameterValue",
                "Value for parameter RedrivePolicy is invalid. Reason: Dead letter target "
                "does not exist.",
            )
        if dlq.fifo != name.endswith(".fifo"):
            raise QueueError(
                "InvalidParameterValue",
                "Value for parameter RedrivePolicy is invalid. Reason: Dead-letter queue must "
                "be same type of queue as the source.",
            )

    def set_attributes(self, name: str, attributes: dict[str, str], now: int) -> None:
        queue = self.queue(name)
        given = rules.validate_queue_attributes(attributes, fifo=queue.fifo, creating=False)
        merged = {**queue.attributes, **given}
        rules.check_fifo_combination(merged)
        self._check_redrive_target(name, merged)
        queue.attributes = {key: value for key, value in merged.items() if value != ""
                            or key not in ("RedrivePolicy", "RedriveAllowPolicy", "Policy")}
        queue.modified_at = now // 1000
        self.journal.queue_saved(queue)

    def delete_queue(self, name: str) -> None:
        queue = self.queue(name)
        del self.queues[name]
        self.journal.queue_deleted(queue.name)

    def tag(self, name: str, tags: dict[str, str]) -> None:
        queue = self.queue(name)
        queue.tags.update(tags)
        self.journal.queue_saved(queue)

    def untag(self, name: str, keys: list[str]) -> None:
        queue = self.queue(name)
        for key in keys:
            queue.tags.pop(key, None)
        self.journal.queue_saved(queue)

    def purge(self, name: str, now: int) -> None:
        queue = self.queue(name)
        if now - queue.purged_at < 60_000:
            raise QueueError(
                "PurgeQueueInProgress",
                f"Only one PurgeQueue operation on {name} is allowed every 60 seconds.",
            )
        queue.purged_at = now
        for message in queue.messages.values():
            message.life.purge()
        queue.clear()
        self.journal.queue_purged(name, self.next_seq)

    def counts(self, name: str, now: int) -> tuple[int, int, int]:
        """(visible, in flight, delayed) as of ``now``.

        Only the timer heap is walked — after ``promote`` every current entry in it is a
        message not yet visible — so a large visible backlog costs nothing here."""
        queue = self.queue(name)
        self._sweep(queue, now)
        queue.promote(now)
        in_flight = delayed = 0
        counted: set[int] = set()
        for visible_at, seq in queue.timers:
            message = queue.messages.get(seq)
            if message is None or message.life.visible_at != visible_at or seq in counted:
                continue  # a stale entry: the message was deleted or its deadline moved
            counted.add(seq)
            if message.life.settle(now) is State.IN_FLIGHT:
                in_flight += 1
            else:
                delayed += 1
        return len(queue.messages) - in_flight - delayed, in_flight, delayed

    def dead_letter_sources(self, name: str) -> list[str]:
        arn = self.arn(self.queue(name).name)
        return [q.name for q in self.queues.values()
                if q.redrive is not None and q.redrive[0] == arn]

    # -- messages ---------------------------------------------------------------------------

    def receipt_handle(self, name: str, delivery: Delivery) -> str:
        """The handle of ``delivery`` (received from queue ``name``): signed, see
        ``receipts``."""
        message = delivery.message
        return self.receipts.encode(name, message.seq, delivery.receipt_token,
                                    message.message_id)

    def send(self, name: str, body: str, now: int, *, delay_seconds: int | None = None,
             message_attributes: dict[str, Any] | None = None,
             system_attributes: dict[str, Any] | None = None, sender_id: str = "",
             group_id: str | None = None, dedup_id: str | None = None) -> StoredMessage:
        queue = self.queue(name)
        attributes = message_attributes or {}
        system = system_attributes or {}
        rules.check_body(body)
        size = len(body.encode()) + rules.check_message_attributes(attributes)
        limit = queue.int_attribute("MaximumMessageSize")
        if size > limit:
            raise rules.invalid(
                f"One or more parameters are invalid. Reason: Message must be shorter than "
                f"{limit} bytes."
            )
        md5_body = rules.md5_hex(body.encode())
        if queue.fifo:
            delay_ms = self._check_fifo_send(queue, delay_seconds, group_id)
            dedup_id = self._dedup_id(queue, md5_body, body, dedup_id)
            key = f"{group_id}\x00{dedup_id}" \
                if queue.attributes.get("DeduplicationScope") == "messageGroup" else dedup_id
            previous = queue.dedup.get(key)
            if previous is not None and previous[2] > now:
                # A duplicate inside the window: accepted, not enqueued, answered with the
                # original message's id.
                return StoredMessage(previous[1], previous[0], body, md5_body,
                                     Lifecycle.sent(now, 0), group_id=group_id, dedup_id=dedup_id)
        else:
            if group_id is not None and group_id == "":
                raise rules.invalid("MessageGroupId must not be empty.")
            if dedup_id is not None:
                raise rules.invalid(
                    "The request include parameter that is not valid for this queue type: "
                    "MessageDeduplicationId"
                )
            default_delay = queue.int_attribute("DelaySeconds")
            delay = default_delay if delay_seconds is None else delay_seconds
            delay_ms = delay * 1000
        message = StoredMessage(
            seq=self.next_seq, message_id=random_uuid(), body=body, md5_of_body=md5_body,
            life=Lifecycle.sent(now, delay_ms), sender_id=sender_id,
            message_attributes=attributes,
            md5_of_message_attributes=rules.md5_of_attributes(attributes) if attributes else None,
            system_attributes=system,
            md5_of_system_attributes=rules.md5_of_attributes(system) if system else None,
            group_id=group_id, dedup_id=dedup_id if queue.fifo else None,
        )
        self.next_seq += 1
        queue.add(message)
        self.journal.message_added(name, message)
        if queue.fifo and dedup_id is not None:
            expires = now + rules.FIFO_DEDUP_WINDOW_MS
            queue.dedup[key] = (message.message_id, message.seq, expires)
            self.journal.dedup_recorded(name, key, message.message_id, message.seq, expires)
        return message

    def _check_fifo_send(self, queue: QueueState, delay_seconds: int | None,
                         group_id: str | None) -> int:
        if not group_id:
            raise QueueError(
                "MissingParameter", "The request must contain the parameter MessageGroupId."
            )
        if not rules.DEDUP_ID_RE.match(group_id):
            raise rules.invalid("MessageGroupId can only contain characters !-~ (1-128).")
        if delay_seconds:
            raise rules.invalid(
                f"Value {delay_seconds} for parameter DelaySeconds is invalid. Reason: The "
                "request include parameter that is not valid for this queue type."
            )
        return queue.int_attribute("DelaySeconds") * 1000

    @staticmethod
    def _dedup_id(queue: QueueState, md5_body: str, body: str, dedup_id: str | None) -> str:
        if dedup_id is not None:
            if not rules.DEDUP_ID_RE.match(dedup_id):
                raise rules.invalid("MessageDeduplicationId can only contain characters !-~.")
            return dedup_id
        if queue.attributes.get("ContentBasedDeduplication") == "true":
            return hashlib.sha256(body.encode()).hexdigest()
        raise rules.invalid(
            "The queue should either have ContentBasedDeduplication enabled or "
            "MessageDeduplicationId provided explicitly"
        )

    def receive(self, name: str, now: int, max_messages: int,
                visibility_seconds: int | None = None) -> list[Delivery]:
        queue = self.queue(name)
        visibility = queue.int_attribute("VisibilityTimeout") \
            if visibility_seconds is None else visibility_seconds
        self._sweep(queue, now)
        candidates = self._fifo_candidates(queue, now, max_messages) if queue.fifo \
            else self._standard_candidates(queue, now, max_messages)
        deliveries = []
        redrive = queue.redrive
        for message in candidates:
            if redrive is not None and message.life.would_dead_letter(redrive[1]) \
                    and arn_queue_name(redrive[0]) in self.queues:
                self._dead_letter(queue, message, arn_queue_name(redrive[0]), now)
                continue
            token = message.life.receive(now, visibility * 1000)
            queue.track(message)
            self.journal.message_changed(name, message)
            deliveries.append(Delivery(message, token))
        return deliveries

    def _standard_candidates(self, queue: QueueState, now: int,
                             max_messages: int) -> list[StoredMessage]:
        queue.promote(now)
        taken: dict[int, StoredMessage] = {}
        while queue.ready and len(taken) < max_messages:
            # The ready line may hold a message twice (two timers ending at the same
            # instant) or hold messages that moved on since: skip those.
            seq = queue.ready.popleft()
            message = queue.messages.get(seq)
            if message is not None and seq not in taken \
                    and message.life.settle(now) is State.VISIBLE:
                taken[seq] = message
        return list(taken.values())

    @staticmethod
    def _fifo_candidates(queue: QueueState, now: int, max_messages: int) -> list[StoredMessage]:
        """The visible messages at the head of the first group not blocked — a group is
        blocked while its oldest message is in flight (or still delayed). One group per
        receive, in order, as SQS hands out messages of the same group together."""
        queue.promote(now)
        for group, seqs in list(queue.groups.items()):
            while seqs and seqs[0] not in queue.messages:
                seqs.popleft()  # deleted, expired, dead-lettered or moved
            if not seqs:
                del queue.groups[group]
                continue
            taken: list[StoredMessage] = []
            for seq in seqs:
                message = queue.messages.get(seq)
                if message is None:
                    continue
                if message.life.settle(now) is not State.VISIBLE:
                    break
                taken.append(message)
                if len(taken) >= max_messages:
                    break
            if taken:
                return taken
        return []

    def _dead_letter(self, queue: QueueState, message: StoredMessage, dlq_name: str,
                     now: int) -> None:
        message.life.dead_letter(now)
        message.origin_queue = queue.name
        del queue.messages[message.seq]
        self._adopt(self.queues[dlq_name], message, now, keep_receive_count=True)

    def _adopt(self, target: QueueState, message: StoredMessage, now: int, *,
               keep_receive_count: bool) -> None:
        """Put an existing message into ``target`` as a visible message. A dead-lettered
        message keeps its receive count; a moved (redriven) one starts afresh, as in SQS."""
        old = message.life
        message.life = Lifecycle(
            sent_at=old.sent_at, visible_at=now,
            receive_count=old.receive_count if keep_receive_count else 0,
            first_receive_at=old.first_receive_at if keep_receive_count else None,
            receipt_token=old.receipt_token)
        target.add(message)
        self.journal.message_changed(target.name, message)

    def _sweep(self, queue: QueueState, now: int) -> None:
        """Drop messages past the retention period (checked from the oldest)."""
        retention = queue.int_attribute("MessageRetentionPeriod") * 1000
        expired = []
        for message in queue.messages.values():
            if not message.life.is_expired(now, retention):
                break
            expired.append(message)
        for message in expired:
            message.life.expire()
            del queue.messages[message.seq]
            self.journal.message_removed(message.seq)
        if queue.dedup and now - queue.dedup_swept_at >= DEDUP_SWEEP_INTERVAL_MS:
            queue.dedup = {k: v for k, v in queue.dedup.items() if v[2] > now}
            queue.dedup_swept_at = now

    def _live_message(self, name: str, receipt_handle: str) -> tuple[QueueState, StoredMessage,
                                                                      int] | None:
        queue = self.queue(name)
        seq, token, message_id = self.receipts.decode(name, receipt_handle)
        message = queue.messages.get(seq)
        if message is None or message.message_id != message_id:
            return None
        return queue, message, token

    def delete(self, name: str, receipt_handle: str, now: int) -> None:
        found = self._live_message(name, receipt_handle)
        if found is None:
            return  # already deleted (or expired): SQS answers success
        queue, message, token = found
        if token != message.life.receipt_token:
            # An older receipt handle: SQS accepts the call but keeps the message.
            return
        message.life.delete(now)
        del queue.messages[message.seq]
        self.journal.message_removed(message.seq)

    def change_visibility(self, name: str, receipt_handle: str, timeout: int, now: int) -> None:
        found = self._live_message(name, receipt_handle)
        if found is None:
            raise QueueError(
                "InvalidParameterValue",
                f"Value {receipt_handle} for parameter ReceiptHandle is invalid. Reason: "
                "Message does not exist or is not available for visibility timeout change.",
            )
        queue, message, token = found
        if token != message.life.receipt_token or message.life.settle(now) is not State.IN_FLIGHT:
            raise QueueError(
                "MessageNotInflight", "The message referred to isn't in flight."
            )
        message.life.change_visibility(now, timeout * 1000)
        queue.track(message)
        self.journal.message_changed(name, message)

    def move_messages(self, source: str, destination: str, limit: int, now: int) -> int:
        """Move up to ``limit`` visible messages (a message move task's step)."""
        src = self.queue(source)
        dst = self.queue(destination)
        moved = 0
        for message in list(src.messages.values()):
            if moved >= limit:
                break
            if message.life.settle(now) is not State.VISIBLE:
                continue
            del src.messages[message.seq]
            message.origin_queue = None
            self._adopt(dst, message, now, keep_receive_count=False)
            moved += 1
        return moved

    def move_message(self, source: str, seq: int, destination: str, now: int) -> int:
        """Move one visible message by its sequence number; returns how many moved (0 or 1)."""
        src = self.queue(source)
        message = src.messages.get(seq)
        if message is None or message.life.settle(now) is not State.VISIBLE:
            return 0
        del src.messages[seq]
        message.origin_queue = None
        self._adopt(self.queue(destination), message, now, keep_receive_count=False)
        return 1

    # -- restoring from storage -------------------------------------------------------------

    def load_queue(self, queue: QueueState) -> None:
        self.queues[queue.name] = queue

    def load_message(self, name: str, message: StoredMessage) -> None:
        queue = self.queues.get(name)
        if queue is None:
            return
        queue.add(message)
        self.next_seq = max(self.next_seq, message.seq + 1)
