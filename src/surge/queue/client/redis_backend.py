"""The redis backend: SQS semantics on a Redis server, the non-AWS way to share a queue
between machines.

Layout (``P`` is the key prefix, default ``surge:sqs:``):

- ``P q:<queue>``   hash — the queue's attributes (plus ``_dlq`` / ``_max_receive`` parsed
  from its RedrivePolicy)
- ``P p:<queue>``   sorted set — messages waiting, scored by when they become visible (ms);
  delayed messages have a future score
- ``P f:<queue>``   sorted set — messages in flight, scored by their visibility deadline
- ``P w:<queue>``   list — wake-up tokens for long polls, one pushed per message sent
- ``P m:<id>``      hash — one message: body, md5, sent, count, first, attrs

Every state change is one Lua script, so it is atomic against every other client on every
machine, and time is Redis's own clock (``TIME``), so machines with skewed clocks agree on
visibility deadlines. Standard queues only: FIFO queues are refused with
``UnsupportedOperation``.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import orjson

from surge.errors import QueueError, QueueUnavailable
from surge.queue.client import rules
from surge.queue.interface import BatchFailure, OutgoingMessage, ReceivedMessage, SendResult

# A waiting long poll re-checks at least this often (a message whose visibility timeout
# expires pushes no wake-up token).
_LONG_POLL_RECHECK = 1.0

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

_REQUIRE_QUEUE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('QueueDoesNotExist no queue named ' .. ARGV[2])
end
"""

# KEYS: meta. ARGV: prefix, queue, then attribute name/value pairs.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  for i = 3, #ARGV, 2 do
    if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then return 0 end
  end
  return 1
end
""" + _NOW + """
redis.call('HSET', KEYS[1], '_created', now, unpack(ARGV, 3))
return 1
"""

# KEYS: meta, pending, wake. ARGV: prefix, queue, then id/body/md5/delay/attrs per message.
_SEND = _REQUIRE_QUEUE + _NOW + """
local default_delay = tonumber(redis.call('HGET', KEYS[1], 'DelaySeconds'))
local sent = 0
for i = 3, #ARGV, 5 do
  local delay = tonumber(ARGV[i + 3]) or default_delay
  redis.call('HSET', ARGV[1] .. 'm:' .. ARGV[i], 'body', ARGV[i + 1], 'md5', ARGV[i + 2],
             'sent', now, 'count', 0, 'attrs', ARGV[i + 4])
  redis.call('ZADD', KEYS[2], now + delay * 1000, ARGV[i])
  redis.call('RPUSH', KEYS[3], 1)
  sent = sent + 1
end
redis.call('LTRIM', KEYS[3], -1000, -1)
redis.call('PEXPIRE', KEYS[3], 60000)
return now
"""

# KEYS: meta, pending, in flight, wake. ARGV: prefix, queue, max, visibility timeout ('' =
# default). Finding nothing clears the wake-up tokens: they are stale, and a long poll that
# took them would only look again for nothing.
_RECEIVE = _REQUIRE_QUEUE + _NOW + """
local prefix, max = ARGV[1], tonumber(ARGV[3])
local timeout = tonumber(ARGV[4]) or tonumber(redis.call('HGET', KEYS[1], 'VisibilityTimeout'))
local retention = tonumber(redis.call('HGET', KEYS[1], 'MessageRetentionPeriod')) * 1000
local dlq = redis.call('HGET', KEYS[1], '_dlq')
local max_receive = tonumber(redis.call('HGET', KEYS[1], '_max_receive') or '0')
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'WITHSCORES')
for i = 1, #expired, 2 do
  redis.call('ZREM', KEYS[3], expired[i])
  redis.call('ZADD', KEYS[2], expired[i + 1], expired[i])
end
local out = {}
while #out < max do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, max - #out)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local key = prefix .. 'm:' .. id
    local sent = tonumber(redis.call('HGET', key, 'sent'))
    redis.call('ZREM', KEYS[2], id)
    if not sent or sent < now - retention then
      redis.call('DEL', key)
    elseif dlq and max_receive > 0
        and tonumber(redis.call('HGET', key, 'count')) >= max_receive
        and redis.call('EXISTS', prefix .. 'q:' .. dlq) == 1 then
      redis.call('ZADD', prefix .. 'p:' .. dlq, now, id)
      redis.call('RPUSH', prefix .. 'w:' .. dlq, 1)
    else
      local count = redis.call('HINCRBY', key, 'count', 1)
      redis.call('HSETNX', key, 'first', now)
      redis.call('ZADD', KEYS[3], now + timeout * 1000, id)
      local f = redis.call('HMGET', key, 'body', 'md5', 'sent', 'first', 'attrs')
      out[#out + 1] = {id, count, f[1], f[2], f[3], f[4], f[5]}
    end
  end
end
if #out == 0 then redis.call('DEL', KEYS[4]) end
return out
"""

# KEYS: meta, pending, in flight. ARGV: prefix, queue, then id/count pairs.
# A handle whose count is not the message's latest (it was received again since) is stale
# and deletes nothing; so does a handle for a message no longer in this queue.
_DELETE = _REQUIRE_QUEUE + """
for i = 3, #ARGV, 2 do
  local key = ARGV[1] .. 'm:' .. ARGV[i]
  local count = redis.call('HGET', key, 'count')
  local here = redis.call('ZSCORE', KEYS[3], ARGV[i]) or redis.call('ZSCORE', KEYS[2], ARGV[i])
  if count and tonumber(count) == tonumber(ARGV[i + 1]) and here then
    redis.call('ZREM', KEYS[3], ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
    redis.call('DEL', key)
  end
end
return 0
"""

# KEYS: meta, pending, in flight, wake. ARGV: prefix, queue, then id/count/timeout triples.
# Returns the indexes (0-based) of entries whose message was not in flight.
_CHANGE_VISIBILITY = _REQUIRE_QUEUE + _NOW + """
local not_in_flight = {}
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  local count = redis.call('HGET', ARGV[1] .. 'm:' .. id, 'count')
  local deadline = tonumber(redis.call('ZSCORE', KEYS[3], id))
  if count and tonumber(count) == tonumber(ARGV[i + 1]) and deadline and deadline > now then
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[i + 2]) * 1000, id)
    if tonumber(ARGV[i + 2]) == 0 then redis.call('RPUSH', KEYS[4], 1) end
  else
    not_in_flight[#not_in_flight + 1] = (i - 3) / 3
  end
end
return not_in_flight
"""

# KEYS: meta, pending, in flight.
_COUNTS = _REQUIRE_QUEUE + _NOW + """
local returned = redis.call('ZCOUNT', KEYS[3], '-inf', now)
return {
  redis.call('ZCOUNT', KEYS[2], '-inf', now) + returned,
  redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf'),
  redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf'),
}
"""


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
            for name, source in (("create", _CREATE), ("send", _SEND), ("receive", _RECEIVE),
                                 ("delete", _DELETE), ("visibility", _CHANGE_VISIBILITY),
                                 ("counts", _COUNTS))
        }

    async def create_queue(self, name: str, attributes: dict[str, str] | None = None) -> str:
        given = attributes or {}
        if given.get("FifoQueue", "false").lower() == "true":
            raise QueueError("UnsupportedOperation", "the redis backend has no FIFO queues")
        full = rules.validate_queue_attributes(name, given)
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
        give_up_at = time.monotonic() + wait_seconds
        while True:
            rows = await self._run("receive", keys, arguments)
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
        results: list[SendResult | None] = [None] * len(messages)
        failures: list[BatchFailure] = []
        arguments: list[str | int | bytes] = [queue]
        for index, message in enumerate(messages):
            try:
                rules.check_outgoing_message(
                    message, fifo=False, max_size=rules.DEFAULT_MAX_MESSAGE_SIZE
                )
            except QueueError as exc:
                failures.append(BatchFailure(index, exc.code, str(exc)))
                continue
            message_id, md5 = str(uuid.uuid4()), rules.md5_hex(message.body)
            delay = "" if message.delay_seconds is None else message.delay_seconds
            arguments += [message_id, message.body, md5, delay, orjson.dumps(message.attributes)]
            results[index] = SendResult(message_id, md5)
        if len(arguments) > 1:
            keys = [self._key("q", queue), self._key("p", queue), self._key("w", queue)]
            await self._run("send", keys, arguments)
        return results, failures

    def _received(self, queue: str, row: list[Any]) -> ReceivedMessage:
        message_id, count, body, md5, sent, first, attributes = row
        message_id = message_id.decode()
        return ReceivedMessage(
            message_id=message_id,
            receipt_handle=self._encode_handle(queue, message_id, int(count)),
            body=body.decode(),
            md5_of_body=md5.decode(),
            attributes={
                "SenderId": self._account_id,
                "SentTimestamp": sent.decode(),
                "ApproximateReceiveCount": str(count),
                "ApproximateFirstReceiveTimestamp": first.decode(),
            },
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
