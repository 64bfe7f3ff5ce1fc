"""The result store on Redis: one hash per task, expiring after the TTL.

For fleets of machines, where the gateways and workers share no disk. Each write is one Lua
script, atomic against every other writer; the status writes follow the same transition
table as the other stores (``surge.results.rules``, compiled into the script), ``queued`` is
only inserted, and an Idempotency-Key binding is made together with its task's ``queued``
record. The history is a JSON array in the hash, appended to and trimmed as text (its
entries hold no brackets of their own). redis-py is imported only when chosen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from surge.errors import ResultStoreError
from surge.results.interface import KeyBinding, StatusChange, TaskRecord
from surge.results.rules import HISTORY_LIMIT, TRANSITIONS

Clock = Callable[[], float]


def _guards_lua() -> str:
    """``TRANSITIONS`` as a Lua table constructor, ``{["queued>running"] = "always", …}``."""
    entries = ", ".join(f'["{now}>{written}"] = "{guard.value}"'
                        for (now, written), guard in TRANSITIONS.items())
    return "{" + entries + "}"


# Appends ARGV[entry] to the hash KEYS[1]'s history, keeping the newest HISTORY_LIMIT.
_APPEND_HISTORY = f"""
local function append_history(key, entry)
  local history = redis.call('HGET', key, 'history')
  local length = tonumber(redis.call('HGET', key, 'history_length') or '0')
  if not history or length == 0 then
    history, length = '[' .. entry .. ']', 1
  else
    history, length = string.sub(history, 1, -2) .. ',' .. entry .. ']', length + 1
  end
  if length > {HISTORY_LIMIT} then
    local cut = string.find(history, '],[', 1, true)
    history, length = '[' .. string.sub(history, cut + 2), length - 1
  end
  redis.call('HSET', key, 'history', history, 'history_length', length)
end
"""

# KEYS[1]: the task's hash. ARGV: task, now, ttl (ms), history entry.
_INSERT_QUEUED = """
local function insert_queued(key, task, now, ttl, entry)
  if redis.call('EXISTS', key) == 1 then return 0 end
  redis.call('HSET', key, 'task', task, 'status', 'queued', 'attempts', 0,
             'created_at', now, 'updated_at', now)
  append_history(key, entry)
  redis.call('PEXPIRE', key, ttl)
  return 1
end
"""

_QUEUED = _APPEND_HISTORY + _INSERT_QUEUED + """
return insert_queued(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""

# KEYS: the binding (a hash), the task's hash. ARGV: task id, fingerprint, key ttl (ms),
# task, now, record ttl (ms), history entry. Returns the existing binding's task id,
# fingerprint and sent flag, or nil once it made one.
_BIND = _APPEND_HISTORY + _INSERT_QUEUED + """
local bound = redis.call('HMGET', KEYS[1], 'task_id', 'fingerprint', 'sent')
if bound[1] then return bound end
redis.call('HSET', KEYS[1], 'task_id', ARGV[1], 'fingerprint', ARGV[2], 'sent', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
insert_queued(KEYS[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
return false
"""

# KEYS[1]: the binding. Marks it sent if it still exists (never re-creates an expired one).
_KEY_SENT = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'sent', 1) end
return 0
"""

# KEYS[1]: the task's hash. ARGV: task, status, attempts, now, ttl (ms), result, error,
# owner, history entry. Returns 1 when the write applied.
_WRITE = _APPEND_HISTORY + f"""
local guards = {_guards_lua()}
local current = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'owner')
if current[1] then
  local guard = guards[current[1] .. '>' .. ARGV[2]]
  if not guard then return 0 end
  if guard == 'same owner' and current[3] and current[3] ~= ARGV[8] then return 0 end
  if guard == 'not older' and tonumber(ARGV[3]) < tonumber(current[2]) then return 0 end
end
redis.call('HSET', KEYS[1], 'task', ARGV[1], 'status', ARGV[2], 'attempts', ARGV[3],
           'updated_at', ARGV[4], 'result', ARGV[6], 'error', ARGV[7])
if ARGV[2] == 'running' then redis.call('HSET', KEYS[1], 'owner', ARGV[8]) end
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[4])
append_history(KEYS[1], ARGV[9])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

_NO_ERROR = "\x00"  # an error message is any text; this marks "none" in the hash


class RedisResultStore:
    def __init__(self, url: str, ttl: float, *, prefix: str = "surge:task:",
                 clock: Clock = time.time, max_connections: int = 32) -> None:
        try:
            import redis.asyncio as redis_asyncio
        except ImportError as exc:
            raise ImportError(
                "the redis result store needs redis-py: pip install 'surge[redis]'"
            ) from exc
        self.url = url
        self.ttl = ttl
        self.prefix = prefix
        # Beside the tasks, never under them: no task id (``GET /tasks/<anything>``) can name
        # a key's binding.
        self.key_prefix = prefix.rstrip(":") + "-idempotency-key:"
        self._clock = clock
        # A blocking pool: a burst of writes waits for a connection instead of failing.
        pool = redis_asyncio.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=10.0,
            socket_timeout=10.0, socket_connect_timeout=5.0,
        )
        self._redis = redis_asyncio.Redis.from_pool(pool)
        self._queued_script = self._redis.register_script(_QUEUED)
        self._bind_script = self._redis.register_script(_BIND)
        self._key_sent_script = self._redis.register_script(_KEY_SENT)
        self._write_script = self._redis.register_script(_WRITE)

    async def mark_queued(self, records: list[tuple[str, str]]) -> None:
        if not records:
            return
        now = self._clock()
        entry = _history_entry("queued", 0, now)
        async with self._redis.pipeline(transaction=False) as pipeline:
            for task_id, task in records:
                await self._queued_script(  # queues the call in the pipeline
                    keys=[self.prefix + task_id],
                    args=[task, repr(now), self._ttl_ms, entry],
                    client=pipeline,
                )
            await self._guard(pipeline.execute())

    async def bind_key(self, key: str, task_id: str, task: str, fingerprint: str,
                       ttl: float) -> KeyBinding:
        now = self._clock()
        bound = await self._guard(self._bind_script(
            keys=[self._key(key), self.prefix + task_id],
            args=[task_id, fingerprint, int(ttl * 1000), task, repr(now), self._ttl_ms,
                  _history_entry("queued", 0, now)],
        ))
        if bound is None:
            return KeyBinding(task_id, fingerprint, created=True)
        bound_task_id, bound_fingerprint, sent = (value.decode() for value in bound)
        return KeyBinding(bound_task_id, bound_fingerprint, created=False, sent=sent == "1")

    async def mark_key_sent(self, key: str) -> None:
        await self._guard(self._key_sent_script(keys=[self._key(key)]))

    async def mark_running(self, task_id: str, task: str, attempt: int, owner: str) -> bool:
        return await self._write(task_id, task, "running", attempt, owner=owner)

    async def mark_succeeded(self, task_id: str, task: str, attempts: int, result: Any) -> None:
        await self._write(task_id, task, "succeeded", attempts, result=orjson.dumps(result))

    async def mark_failed(self, task_id: str, task: str, attempts: int, error: str) -> None:
        await self._write(task_id, task, "failed", attempts, error=error)

    async def mark_dead(self, task_id: str, task: str, attempts: int, error: str) -> None:
        await self._write(task_id, task, "dead", attempts, error=error)

    async def get(self, task_id: str) -> TaskRecord | None:
        stored = await self._guard(self._redis.hgetall(self.prefix + task_id))
        if not stored:
            return None
        fields = {key.decode(): value for key, value in stored.items()}
        if "status" not in fields:  # not a task's record (a foreign key under the prefix)
            return None
        result, error = fields.get("result", b""), fields.get("error", _NO_ERROR.encode())
        history = orjson.loads(fields["history"]) if fields.get("history") else []
        return TaskRecord(
            id=task_id,
            task=fields["task"].decode(),
            status=fields["status"].decode(),
            attempts=int(fields["attempts"]),
            created_at=float(fields["created_at"]),
            updated_at=float(fields["updated_at"]),
            result=orjson.loads(result) if result else None,
            error=None if error == _NO_ERROR.encode() else error.decode(),
            history=tuple(StatusChange(*entry) for entry in history),
        )

    async def close(self) -> None:
        await self._redis.aclose()

    def _key(self, key: str) -> str:
        return self.key_prefix + key

    @property
    def _ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    async def _write(self, task_id: str, task: str, status: str, attempts: int, *,
                     owner: str = "", result: bytes | None = None,
                     error: str | None = None) -> bool:
        now = self._clock()
        arguments: list[Any] = [
            task, status, attempts, repr(now), self._ttl_ms, result or b"",
            _NO_ERROR if error is None else error, owner, _history_entry(status, attempts, now)]
        applied = await self._guard(self._write_script(keys=[self.prefix + task_id],
                                                       args=arguments))
        return bool(applied)

    async def _guard(self, pending: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await pending
        except (RedisError, OSError) as exc:
            raise ResultStoreError(f"redis result store at {self.url}: {exc}") from exc


def _history_entry(status: str, attempts: int, now: float) -> str:
    return orjson.dumps([status, attempts, now]).decode()
