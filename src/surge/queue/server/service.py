"""The SQS actions: parameters in (JSON-shaped, whichever protocol carried them), results out.

Validation, long polling and durability live here; the semantics live in the broker and the
wire formats in ``wire``. Every mutating action returns only after its changes are committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from surge.errors import QueueError
from surge.queue.server import rules
from surge.queue.server.broker import (
    Broker,
    Delivery,
    QueueState,
    arn_queue_name,
)
from surge.queue.server.longpoll import LongPollWaiters
from surge.queue.server.moves import MessageMover
from surge.queue.server.store import SqliteStore, StoreFull

Params = dict[str, Any]
Result = dict[str, Any]

def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class CallContext:
    base_url: str  # "http://host:port" of queue URLs: configured, never the client's Host
    sender_id: str
    path: str = "/"  # the query protocol may address the queue by the request path


class QueueService:
    """One method per SQS action; ``call`` dispatches by action name from a fixed table."""

    def __init__(self, broker: Broker, store: SqliteStore | None = None,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.broker = broker
        self.store = store
        self.clock = clock
        self.waiters = LongPollWaiters()
        self.mover = MessageMover(broker, self._durable, self.waiters.wake, clock, store)
        self.stopping = False
        self._actions: dict[str, Callable[[Params, CallContext], Awaitable[Result]]] = {
            "CreateQueue": self.create_queue,
            "GetQueueUrl": self.get_queue_url,
            "ListQueues": self.list_queues,
            "DeleteQueue": self.delete_queue,
            "GetQueueAttributes": self.get_queue_attributes,
            "SetQueueAttributes": self.set_queue_attributes,
            "PurgeQueue": self.purge_queue,
            "SendMessage": self.send_message,
            "SendMessageBatch": self.send_message_batch,
            "ReceiveMessage": self.receive_message,
            "DeleteMessage": self.delete_message,
            "DeleteMessageBatch": self.delete_message_batch,
            "ChangeMessageVisibility": self.change_message_visibility,
            "ChangeMessageVisibilityBatch": self.change_message_visibility_batch,
            "ListDeadLetterSourceQueues": self.list_dead_letter_source_queues,
            "StartMessageMoveTask": self.start_message_move_task,
            "ListMessageMoveTasks": self.list_message_move_tasks,
            "CancelMessageMoveTask": self.cancel_message_move_task,
            "TagQueue": self.tag_queue,
            "UntagQueue": self.untag_queue,
            "ListQueueTags": self.list_queue_tags,
            "AddPermission": self.unsupported,
            "RemovePermission": self.unsupported,
        }

    async def call(self, action: str, params: Params, context: CallContext) -> Result:
        handler = self._actions.get(action)
        if handler is None:
            raise QueueError("InvalidAction",
                             f"The action {action} is not valid for this endpoint.")
        return await handler(params, context)

    async def _durable(self) -> None:
        if self.store is not None:
            await self.store.durable()

    def _check_room(self) -> None:
        """Sends and new queues grow the database: refused while the disk is full, before
        anything changes (receives, deletes and visibility changes go on)."""
        if self.store is not None and self.store.disk_full:
            raise QueueError(
                "ServiceUnavailable",
                "The queue server's disk is full: no message can be stored until space is "
                "freed. Receives, deletes and visibility changes still work.",
                sender_fault=False)

    # -- addressing ---------------------------------------------------------------------------

    def queue_url(self, context: CallContext, name: str) -> str:
        return f"{context.base_url}/{self.broker.account_id}/{name}"

    def _queue_name(self, params: Params, context: CallContext) -> str:
        url = params.get("QueueUrl")
        if not url:
            parts = [part for part in context.path.split("/") if part]
            if len(parts) == 2:
                url = context.path
            else:
                rules.require(params, "QueueUrl")
        name = str(url).rstrip("/").rsplit("/", 1)[-1]
        self.broker.queue(name)  # QueueDoesNotExist early
        return name

    def _queue_from_arn(self, arn: str, parameter: str) -> QueueState:
        if not arn.startswith("arn:aws:sqs:"):
            raise rules.invalid(f"Value {arn} for parameter {parameter} is invalid.")
        return self.broker.queue(arn_queue_name(arn))

    # -- shutdown -----------------------------------------------------------------------------

    def stop(self) -> None:
        """End every long poll now (SIGTERM) and stop move tasks."""
        self.stopping = True
        self.waiters.wake_everyone()
        self.mover.stop()

    # -- queues -------------------------------------------------------------------------------

    async def create_queue(self, params: Params, context: CallContext) -> Result:
        name = str(rules.require(params, "QueueName"))
        if name not in self.broker.queues:
            self._check_room()
        attributes = {k: str(v) for k, v in (params.get("Attributes") or {}).items()}
        tags = {k: str(v) for k, v in (params.get("tags") or params.get("Tags") or {}).items()}
        self.broker.create_queue(name, attributes, tags, self.clock())
        await self._durable()
        return {"QueueUrl": self.queue_url(context, name)}

    async def get_queue_url(self, params: Params, context: CallContext) -> Result:
        name = str(rules.require(params, "QueueName"))
        self.broker.queue(name)
        return {"QueueUrl": self.queue_url(context, name)}

    async def list_queues(self, params: Params, context: CallContext) -> Result:
        prefix = str(params.get("QueueNamePrefix") or "")
        names = [n for n in self.broker.queues if n.startswith(prefix)]
        return self._page_of_urls(names, params, context, "QueueUrls")

    async def delete_queue(self, params: Params, context: CallContext) -> Result:
        name = self._queue_name(params, context)
        self.broker.delete_queue(name)
        self.waiters.wake(name)
        await self._durable()
        return {}

    async def get_queue_attributes(self, params: Params, context: CallContext) -> Result:
        name = self._queue_name(params, context)
        wanted = [str(n) for n in params.get("AttributeNames") or []]
        for attribute in wanted:
            if attribute != "All" and attribute not in rules.ALL_ATTRIBUTE_NAMES:
                raise QueueError("InvalidAttributeName", f"Unknown Attribute {attribute}.")
        if not wanted:
            return {}
        queue = self.broker.queue(name)
        visible, in_flight, delayed = self.broker.counts(name, self.clock())
        values = {
            **queue.attributes,
            "ApproximateNumberOfMessages": str(visible),
            "ApproximateNumberOfMessagesNotVisible": str(in_flight),
            "ApproximateNumberOfMessagesDelayed": str(delayed),
            "CreatedTimestamp": str(queue.created_at),
            "LastModifiedTimestamp": str(queue.modified_at),
            "QueueArn": self.broker.arn(name),
        }
        if "All" not in wanted:
            values = {k: v for k, v in values.items() if k in wanted}
        return {"Attributes": values}

    async def set_queue_attributes(self, params: Params, context: CallContext) -> Result:
        name = self._queue_name(params, context)
        attributes = {k: str(v) for k, v in (rules.require(params, "Attributes")).items()}
        self.broker.set_attributes(name, attributes, self.clock())
        await self._durable()
        return {}

    async def purge_queue(self, params: Params, context: CallContext) -> Result:
        self.broker.purge(self._queue_name(params, context), self.clock())
        await self._durable()
        return {}

    async def tag_queue(self, params: Params, context: CallContext) -> Result:
        tags = {k: str(v) for k, v in rules.require(params, "Tags").items()}
        self.broker.tag(self._queue_name(params, context), tags)
        await self._durable()
        return {}

    async def untag_queue(self, params: Params, context: CallContext) -> Result:
        keys = [str(k) for k in rules.require(params, "TagKeys")]
        self.broker.untag(self._queue_name(params, context), keys)
        await self._durable()
        return {}

    async def list_queue_tags(self, params: Params, context: CallContext) -> Result:
        tags = self.broker.queue(self._queue_name(params, context)).tags
        return {"Tags": dict(tags)} if tags else {}

    async def list_dead_letter_source_queues(self, params: Params,
                                             context: CallContext) -> Result:
        sources = self.broker.dead_letter_sources(self._queue_name(params, context))
        return self._page_of_urls(sources, params, context, "queueUrls")

    def _page_of_urls(self, names: list[str], params: Params, context: CallContext,
                      key: str) -> Result:
        """One page of queue URLs in name order: MaxResults (1–1000) and NextToken, the last
        name of the previous page, as ListQueues and ListDeadLetterSourceQueues take them."""
        names = sorted(names)
        max_results = rules.int_param(params, "MaxResults", 1, 1000)
        token = params.get("NextToken")
        if token:
            names = [n for n in names if n > str(token)]
        result: Result = {}
        if max_results is not None and len(names) > max_results:
            names = names[:max_results]
            result["NextToken"] = names[-1]
        result[key] = [self.queue_url(context, n) for n in names]
        return result

    async def unsupported(self, params: Params, context: CallContext) -> Result:
        raise QueueError("UnsupportedOperation", "This operation is not supported by surge.")

    # -- sending ------------------------------------------------------------------------------

    def _send_one(self, name: str, entry: Params, context: CallContext) -> Result:
        body = entry.get("MessageBody")
        if body is None:
            raise QueueError(
                "MissingParameter", "The request must contain the parameter MessageBody."
            )
        delay = rules.int_param(entry, "DelaySeconds", 0, rules.MAX_DELAY_SECONDS)
        system = entry.get("MessageSystemAttributes") or {}
        for key in system:
            if key != "AWSTraceHeader":
                raise rules.invalid(f"Message system attribute name '{key}' is invalid.")
        message = self.broker.send(
            name, str(body), self.clock(), delay_seconds=delay,
            message_attributes=entry.get("MessageAttributes") or {},
            system_attributes=system, sender_id=context.sender_id,
            group_id=entry.get("MessageGroupId"), dedup_id=entry.get("MessageDeduplicationId"),
        )
        result: Result = {"MessageId": message.message_id, "MD5OfMessageBody": message.md5_of_body}
        if message.md5_of_message_attributes:
            result["MD5OfMessageAttributes"] = message.md5_of_message_attributes
        if message.md5_of_system_attributes:
            result["MD5OfMessageSystemAttributes"] = message.md5_of_system_attributes
        if self.broker.queues[name].fifo:
            result["SequenceNumber"] = f"{message.seq:020d}"
        return result

    async def send_message(self, params: Params, context: CallContext) -> Result:
        name = self._queue_name(params, context)
        self._check_room()
        result = self._send_one(name, params, context)
        self.waiters.wake(name, 1)
        await self._durable()
        return result

    async def send_message_batch(self, params: Params, context: CallContext) -> Result:
        name = self._queue_name(params, context)
        entries = self._entries(params)
        self._check_room()
        total = sum(len(str(e.get("MessageBody", "")).encode()) for e in entries)
        if total > rules.MAX_MESSAGE_BYTES:
            raise QueueError(
                "BatchRequestTooLong",
                f"Batch requests cannot be longer than {rules.MAX_MESSAGE_BYTES} bytes. "
                f"You have sent {total} bytes.",
            )
        successful, failed = [], []
        for entry in entries:
            try:
                result = self._send_one(name, entry, context)
            except QueueError as exc:
                failed.append(_failure(entry, exc))
            else:
                successful.append({"Id": entry["Id"], **result})
        if successful:
            self.waiters.wake(name, len(successful))
        await self._durable()
        return {"Successful": successful, "Failed": failed}

    @staticmethod
    def _entries(params: Params) -> list[Params]:
        entries = params.get("Entries")
        if entries is None:
            raise QueueError("MissingParameter", "The request must contain the parameter Entries.")
        entries = list(entries)
        rules.check_batch_ids(entries)
        return entries

    # -- receiving ----------------------------------------------------------------------------

    async def receive_message(self, params: Params, context: CallContext) -> Result:
        name = self._queue_name(params, context)
        queue = self.broker.queue(name)
        max_messages = rules.int_param(params, "MaxNumberOfMessages", 1, 10, 1)
        visibility = rules.int_param(params, "VisibilityTimeout", 0, rules.MAX_VISIBILITY_SECONDS)
        wait = rules.int_param(params, "WaitTimeSeconds", 0, rules.MAX_WAIT_SECONDS)
        if wait is None:
            wait = queue.int_attribute("ReceiveMessageWaitTimeSeconds")
        assert max_messages is not None
        deliveries = await self._receive_waiting(name, max_messages, visibility, wait)
        if deliveries:
            try:
                await self._durable()
            except (asyncio.CancelledError, StoreFull):
                # The client went away (a worker stopping) after these were taken for it, or
                # the disk has no room to record the receive: hand them back now rather than
                # after their visibility timeout.
                self._hand_back(name, deliveries)
                raise
        system_names = set(params.get("AttributeNames") or []) | set(
            params.get("MessageSystemAttributeNames") or [])
        attribute_names = [str(n) for n in params.get("MessageAttributeNames") or []]
        messages = [self._render(name, d, system_names, attribute_names) for d in deliveries]
        return {"Messages": messages} if messages else {}

    def _hand_back(self, name: str, deliveries: list[Delivery]) -> None:
        now = self.clock()
        for delivery in deliveries:
            handle = self.broker.receipt_handle(name, delivery)
            try:
                self.broker.change_visibility(name, handle, 0, now)
            except QueueError:
                continue  # deleted or moved meanwhile: nothing to hand back
        self.waiters.wake(name, len(deliveries))

    async def _receive_waiting(self, name: str, max_messages: int, visibility: int | None,
                               wait_seconds: int) -> list[Delivery]:
        deadline = self.clock() + wait_seconds * 1000
        while True:
            deliveries = self.broker.receive(name, self.clock(), max_messages, visibility)
            now = self.clock()
            if deliveries or now >= deadline or self.stopping:
                return deliveries
            queue = self.broker.queues.get(name)
            if queue is None:
                return []
            wake_at = deadline
            next_change = queue.next_change_at()
            if next_change is not None:
                wake_at = min(wake_at, next_change)
            # Sleep until woken by a send, or until the next delay / visibility deadline.
            await self.waiters.wait(name, max(0.0, (wake_at - now) / 1000) + 0.001)

    def _render(self, name: str, delivery: Delivery, system_names: set[str],
                attribute_names: list[str]) -> Result:
        message = delivery.message
        rendered: Result = {
            "MessageId": message.message_id,
            "ReceiptHandle": self.broker.receipt_handle(name, delivery),
            "MD5OfBody": message.md5_of_body,
            "Body": message.body,
        }
        if system_names:
            life = message.life
            available = {
                "SenderId": message.sender_id,
                "SentTimestamp": str(life.sent_at),
                "ApproximateReceiveCount": str(life.receive_count),
                "ApproximateFirstReceiveTimestamp": str(life.first_receive_at or life.sent_at),
            }
            if message.group_id is not None:
                available["MessageGroupId"] = message.group_id
            if message.dedup_id is not None:
                available["MessageDeduplicationId"] = message.dedup_id
                available["SequenceNumber"] = f"{message.seq:020d}"
            if "AWSTraceHeader" in message.system_attributes:
                available["AWSTraceHeader"] = str(
                    message.system_attributes["AWSTraceHeader"].get("StringValue", ""))
            if message.origin_queue is not None:
                available["DeadLetterQueueSourceArn"] = self.broker.arn(message.origin_queue)
            if "All" not in system_names:
                available = {k: v for k, v in available.items() if k in system_names}
            if available:
                rendered["Attributes"] = available
        selected = _select_attributes(message.message_attributes, attribute_names)
        if selected:
            rendered["MessageAttributes"] = selected
            rendered["MD5OfMessageAttributes"] = rules.md5_of_attributes(selected)
        return rendered

    # -- deleting and visibility --------------------------------------------------------------

    async def delete_message(self, params: Params, context: CallContext) -> Result:
        name = self._queue_name(params, context)
        self.broker.delete(name, str(rules.require(params, "ReceiptHandle")), self.clock())
        await self._durable()
        return {}

    async def delete_message_batch(self, params: Params, context: CallContext) -> Result:
        name = self._queue_name(params, context)
        successful, failed = [], []
        for entry in self._entries(params):
            try:
                handle = entry.get("ReceiptHandle")
                if not handle:
                    raise QueueError("MissingParameter",
                                     "The request must contain the parameter ReceiptHandle.")
                self.broker.delete(name, str(handle), self.clock())
            except QueueError as exc:
                failed.append(_failure(entry, exc))
            else:
                successful.append({"Id": entry["Id"]})
        await self._durable()
        return {"Successful": successful, "Failed": failed}

    def _change_one(self, name: str, entry: Params) -> None:
        handle = str(rules.require(entry, "ReceiptHandle"))
        timeout = rules.int_param(entry, "VisibilityTimeout", 0, rules.MAX_VISIBILITY_SECONDS)
        if timeout is None:
            raise QueueError(
                "MissingParameter", "The request must contain the parameter VisibilityTimeout."
            )
        self.broker.change_visibility(name, handle, timeout, self.clock())
        if timeout == 0:
            self.waiters.wake(name, 1)

    async def change_message_visibility(self, params: Params, context: CallContext) -> Result:
        self._change_one(self._queue_name(params, context), params)
        await self._durable()
        return {}

    async def change_message_visibility_batch(self, params: Params,
                                              context: CallContext) -> Result:
        name = self._queue_name(params, context)
        successful, failed = [], []
        for entry in self._entries(params):
            try:
                self._change_one(name, entry)
            except QueueError as exc:
                failed.append(_failure(entry, exc))
            else:
                successful.append({"Id": entry["Id"]})
        await self._durable()
        return {"Successful": successful, "Failed": failed}

    # -- message move tasks -------------------------------------------------------------------

    async def start_message_move_task(self, params: Params, context: CallContext) -> Result:
        source = self._queue_from_arn(str(rules.require(params, "SourceArn")), "SourceArn")
        destination_arn = params.get("DestinationArn")
        destination = None
        if destination_arn:
            destination = self._queue_from_arn(str(destination_arn), "DestinationArn").name
        rate = rules.int_param(params, "MaxNumberOfMessagesPerSecond", 1, 500)
        return {"TaskHandle": self.mover.start(source.name, destination, rate).handle}

    async def list_message_move_tasks(self, params: Params, context: CallContext) -> Result:
        source = self._queue_from_arn(str(rules.require(params, "SourceArn")), "SourceArn")
        max_results = rules.int_param(params, "MaxResults", 1, 10, 1)
        results = []
        for task in self.mover.tasks_of(source.name)[:max_results]:
            entry: Result = {
                "Status": task.status,
                "SourceArn": self.broker.arn(task.source),
                "ApproximateNumberOfMessagesMoved": task.moved,
                "ApproximateNumberOfMessagesToMove": task.to_move,
                "StartedTimestamp": task.started_at,
            }
            if task.status == "RUNNING":
                entry["TaskHandle"] = task.handle
            if task.destination:
                entry["DestinationArn"] = self.broker.arn(task.destination)
            if task.rate:
                entry["MaxNumberOfMessagesPerSecond"] = task.rate
            if task.failure:
                entry["FailureReason"] = task.failure
            results.append(entry)
        return {"Results": results}

    async def cancel_message_move_task(self, params: Params, context: CallContext) -> Result:
        task = self.mover.cancel(str(rules.require(params, "TaskHandle")))
        return {"ApproximateNumberOfMessagesMoved": task.moved}


def _failure(entry: Params, exc: QueueError) -> Result:
    return {"Id": str(entry.get("Id", "")), "Code": exc.code,
            "Message": str(exc).removeprefix(f"{exc.code}: "), "SenderFault": exc.sender_fault}


def _select_attributes(attributes: dict[str, Any], names: list[str]) -> dict[str, Any]:
    if not attributes or not names:
        return {}
    if "All" in names or ".*" in names:
        return dict(attributes)
    selected = {}
    for key, value in attributes.items():
        for pattern in names:
            if pattern == key or (pattern.endswith(".*") and key.startswith(pattern[:-1])):
                selected[key] = value
                break
    return selected
