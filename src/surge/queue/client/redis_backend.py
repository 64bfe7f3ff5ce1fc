"""The redis backend: SQS semantics on a Redis server, the non-AWS way to share a queue
between machines.

Layout (``P`` is the key prefix, default ``surge:sqs:``):

- ``P q:<queue>``   hash — the queue's attributes (plus ``_dlq`` / ``_max_receive`` parsed
  from its RedrivePolicy)
- ``P p:<queue>``   sorted set — messages waiting, scored by when they become visible (ms;
  delayed messages have a future score), or by sequence number in a FIFO queue
- ``P f:<queue>``   sorted set — messages in flight, scored by their visibility deadline
- ``P w:<queue>``   list — wake-up tokens for long polls, one pushed per message sent
- ``P s:<queue>``   counter — FIFO sequence numbers
- ``P m:<id>``      hash — one message: body, md5, sent, count, first, attrs

Every state change is one Lua script (``redis_scripts``), so it is atomic against every
other client on every machine, and time is Redis's own clock (``TIME``), so machines with
skewed clocks agree on visibility deadlines. FIFO queues (``.fifo``) keep the pending set
in send order and hold back a group while one of its messages is in flight; deduplication
ids live 5 minutes in ``P d:<queue>:<id>`` keys.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import orjson

from surge.errors import QueueError, QueueUnavailable
from surge.queue.client import redis_scripts as scripts
from surge.queue.client import rules
from surge.queue.interface import BatchFailure, OutgoingMessage, ReceivedMessage, SendResult

# A waiting long poll re-checks at least this often (a message whose visibility timeout
# expires pushes no wake-up token).
_LONG_POLL_RECHECK = 1.0


def _is_fifo(queue: str) -> bool:
    return queue.endswith(".fifo")  # SQS ties the two: FIFO queue names end in .fifo


def _import_redis() -> Any:
    try:
        import redis.asyncio as redis_asyncio
    except ImportError as exc:
        raise ImportError(
            "the redis queue backend needs redis-py: pip install 'surge[redis]'"
        ) from exc
    return redis_asyncio


class RedisQueueClient:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "surge:sqs:",
        region: str = "us-east-1",
        account_id: str = "000000000000",
        socket_timeout: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        redis_asyncio = _import_redis()
        self.url = url
        self.prefix = prefix
        self._region = region
        self._account_id = account_id
        self._socket_timeout = socket_timeout
        # A blocking pool: a burst of calls waits for a connection instead of failing. Each
        # waiting long poll holds one connection for up to _LONG_POLL_RECHECK seconds.
        pool = redis_asyncio.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=socket_timeout,
            socket_timeout=socket_timeout, socket_connect_timeout=5.0,
        )
        self._redis = redis_asyncio.Redis.from_pool(pool)
        self._scripts = {
            name: self._redis.register_script(source)
            for name, source in (
                ("create", scripts.CREATE), ("send", scripts.SEND),
                ("receive", scripts.RECEIVE), ("send_fifo", scripts.SEND_FIFO),
                ("receive_fifo", scripts.RECEIVE_FIFO), ("delete", scripts.DELETE),
                ("visibility", scripts.CHANGE_VISIBILITY), ("counts", scripts.COUNTS),
            )
        }

    async def create_queue(self, name: str, attributes: dict[str, str] | None = None) -> str:
        full = rules.validate_queue_attributes(name, attributes or {})
        if "RedrivePolicy" in full:
            policy = rules.parse_redrive_policy(full["RedrivePolicy"])
            full["_dlq"] = policy.dead_letter_queue
            full["_max_receive"] = str(policy.max_receive_count)
        pairs = [item for key_value in full.items() for item in key_value]
        created = await self._run("create", [self._key("q", name)], [name, *pairs])
        if not created:
            raise QueueError("QueueNameExists", f"{name} exists with other attributes")
        return self._url_for(name)

    async def get_queue_url(self, name: str) -> str:
        exists = await self._command(self._redis.exists(self._key("q", name)))
        if not exists:
            raise QueueError("QueueDoesNotExist", f"no queue named {name}")
        return self._url_for(name)

    async def send(self, queue: str, message: OutgoingMessage) -> SendResult:
        results, failures = await self._send_many(queue, [message])
        if failures:
            raise QueueError(failures[0].code, failures[0].message)
        result = results[0]
        assert result is not None
        return result

    async def send_batch(
        self, queue: str, messages: list[OutgoingMessage]
    ) -> tuple[list[SendResult | None], list[BatchFailure]]:
        rules.check_batch_size(messages)
        return await self._send_many(queue, messages)

    async def receive(
        self,
        queue: str,
        max_messages: int = 1,
        wait_seconds: float = 0,
        visibility_timeout: int | None = None,
    ) -> list[ReceivedMessage]:
        rules.check_receive_parameters(max_messages, wait_seconds, visibility_timeout)
        keys = [self._key("q", queue), self._key("p", queue), self._key("f", queue),
                self._key("w", queue)]
        arguments = [queue, max_messages, "" if visibility_timeout is None else visibility_timeout]
        script = "receive_fifo" if _is_fifo(queue) else "receive"
        give_up_at = time.monotonic() + wait_seconds
        while True:
            rows = await self._run(script, keys, arguments)
            remaining = give_up_at - time.monotonic()
            if rows or remaining <= 0:
                return [self._received(queue, row) for row in rows]
            # Sends push one token per message: a waiting poll takes one and looks again.
            pause = max(0.01, min(remaining, _LONG_POLL_RECHECK))  # 0 would block forever
            await self._command(self._redis.blpop([self._key("w", queue)], timeout=pause))

    async def delete(self, queue: str, receipt_handle: str) -> None:
        failures = await self.delete_batch(queue, [receipt_handle])
        if failures:
            raise QueueError(failures[0].code, failures[0].message)

    async def delete_batch(self, queue: str, receipt_handles: list[str]) -> list[BatchFailure]:
        rules.check_batch_size(receipt_handles)
        failures: list[BatchFailure] = []
        arguments: list[str | int] = [queue]
        for index, handle in enumerate(receipt_handles):
            try:
                message_id, count = self._decode_handle(queue, handle)
            except QueueError as exc:
                failures.append(BatchFailure(index, exc.code, str(exc)))
                continue
            arguments += [message_id, count]
        keys = [self._key("q", queue), self._key("p", queue), self._key("f", queue)]
        await self._run("delete", keys, arguments)
        return failures

    async def change_visibility(self, queue: str, receipt_handle: str, timeout: int) -> None:
        failures = await self.change_visibility_batch(queue, [(receipt_handle, timeout)])
        if failures:
            raise QueueError(failures[0].code, failures[0].message)

    async def change_visibility_batch(
        self, queue: str, entries: list[tuple[str, int]]
    ) -> list[BatchFailure]:
        rules.check_batch_size(entries)
        failures: list[BatchFailure] = []
        arguments: list[str | int] = [queue]
        sent_indexes = []
        for index, (handle, timeout) in enumerate(entries):
            try:
                rules.check_visibility_timeout(timeout)
                message_id, count = self._decode_handle(queue, handle)
            except QueueError as exc:
                failures.append(BatchFailure(index, exc.code, str(exc)))
                continue
            arguments += [message_id, count, timeout]
            sent_indexes.append(index)
        keys = [self._key("q", queue), self._key("p", queue), self._key("f", queue),
                self._key("w", queue)]
        not_in_flight = await self._run("visibility", keys, arguments)
        failures += [
            BatchFailure(sent_indexes[int(i)], "MessageNotInflight", "the message is not in flight")
            for i in not_in_flight
        ]
        return sorted(failures, key=lambda failure: failure.index)

    async def get_attributes(self, queue: str, names: list[str] | None = None) -> dict[str, str]:
        keys = [self._key("q", queue), self._key("p", queue), self._key("f", queue)]
        visible, in_flight, delayed = await self._run("counts", keys, [queue])
        stored = await self._command(self._redis.hgetall(self._key("q", queue)))
        attributes = {k.decode(): v.decode() for k, v in stored.items()}
        created = str(int(attributes.get("_created", "0")) // 1000)
        everything = {
            **{k: v for k, v in attributes.items() if not k.startswith("_")},
            "ApproximateNumberOfMessages": str(visible),
            "ApproximateNumberOfMessagesNotVisible": str(in_flight),
            "ApproximateNumberOfMessagesDelayed": str(delayed),
            "QueueArn": rules.queue_arn(queue, self._region, self._account_id),
            "CreatedTimestamp": created,
            "LastModifiedTimestamp": created,
        }
        if not names or "All" in names:
            return everything
        return {name: everything[name] for name in names if name in everything}

    async def close(self) -> None:
        await self._redis.aclose()

    # helpers
    async def _send_many(
        self, queue: str, messages: list[OutgoingMessage]
    ) -> tuple[list[SendResult | None], list[BatchFailure]]:
        fifo = _is_fifo(queue)
        results: list[SendResult | None] = [None] * len(messages)
        failures: list[BatchFailure] = []
        arguments: list[str | int | bytes] = [queue]
        accepted: list[tuple[int, str]] = []  # (index, md5) of messages passed to the script
        for index, message in enumerate(messages):
            try:
                rules.check_outgoing_message(
                    message, fifo=fifo, max_size=rules.DEFAULT_MAX_MESSAGE_SIZE
                )
            except QueueError as exc:
                failures.append(BatchFailure(index, exc.code, str(exc)))
                continue
            message_id, md5 = str(uuid.uuid4()), rules.md5_hex(message.body)
            attributes = orjson.dumps(message.attributes)
            if fifo:
                arguments += [message_id, message.body, md5, attributes, message.group_id or "",
                              message.deduplication_id or "",
                              rules.content_deduplication_id(message.body)]
            else:
                delay = "" if message.delay_seconds is None else message.delay_seconds
                arguments += [message_id, message.body, md5, delay, attributes]
                results[index] = SendResult(message_id, md5)
            accepted.append((index, md5))
        if accepted and fifo:
            keys = [self._key("q", queue), self._key("p", queue), self._key("w", queue),
                    self._key("s", queue)]
            outcomes = await self._run("send_fifo", keys, arguments)
            for (index, md5), (message_id, detail) in zip(accepted, outcomes, strict=True):
                if message_id:
                    results[index] = SendResult(message_id.decode(), md5, detail.decode())
                else:
                    failures.append(BatchFailure(
                        index, detail.decode(),
                        "FIFO queue without ContentBasedDeduplication needs a "
                        "MessageDeduplicationId"))
        elif accepted:
            keys = [self._key("q", queue), self._key("p", queue), self._key("w", queue)]
            await self._run("send", keys, arguments)
        return results, sorted(failures, key=lambda failure: failure.index)

    def _received(self, queue: str, row: list[Any]) -> ReceivedMessage:
        message_id, count, body, md5, sent, first, attributes, *fifo_fields = row
        message_id = message_id.decode()
        system_attributes = {
            "SenderId": self._account_id,
            "SentTimestamp": sent.decode(),
            "ApproximateReceiveCount": str(count),
            "ApproximateFirstReceiveTimestamp": first.decode(),
        }
        if fifo_fields:
            group, deduplication, sequence = (field.decode() for field in fifo_fields)
            system_attributes.update(MessageGroupId=group, MessageDeduplicationId=deduplication,
                                     SequenceNumber=sequence)
        return ReceivedMessage(
            message_id=message_id,
            receipt_handle=self._encode_handle(queue, message_id, int(count)),
            body=body.decode(),
            md5_of_body=md5.decode(),
            attributes=system_attributes,
            message_attributes=orjson.loads(attributes),
        )

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    def _url_for(self, name: str) -> str:
        return f"{self.url.rstrip('/')}#{name}"

    @staticmethod
    def _encode_handle(queue: str, message_id: str, count: int) -> str:
        raw = f"{queue}\n{message_id}\n{count}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def _decode_handle(queue: str, handle: str) -> tuple[str, int]:
        try:
            padded = handle + "=" * (-len(handle) % 4)
            handle_queue, message_id, count = base64.urlsafe_b64decode(padded).decode().split("\n")
            parsed = (message_id, int(count))
        except (ValueError, UnicodeDecodeError) as exc:
            raise QueueError("ReceiptHandleIsInvalid", "not a receipt handle") from exc
        if handle_queue != queue:
            raise QueueError("ReceiptHandleIsInvalid", "the receipt handle is for another queue")
        return parsed

    async def _run(self, script: str, keys: list[str], arguments: list[Any]) -> Any:
        return await self._command(self._scripts[script](keys=keys, args=[self.prefix, *arguments]))

    async def _command(self, pending: Any) -> Any:
        from redis.exceptions import ConnectionError, ResponseError, TimeoutError

        try:
            return await pending
        except ResponseError as exc:
            code, _, message = str(exc).partition(" ")
            if code == "QueueDoesNotExist":
                raise QueueError(code, message) from exc
            raise QueueUnavailable(f"redis: {exc}") from exc
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise QueueUnavailable(f"redis at {self.url}: {exc}") from exc
