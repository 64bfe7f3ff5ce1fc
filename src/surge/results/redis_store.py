"""The result store on Redis: one hash per task, expiring after the TTL.

For fleets of machines, where the gateways and workers share no disk. The rules of the
SQLite store hold here too, inside one Lua script per write so they are atomic against
every other writer: final states are never overwritten, an older attempt never replaces a
newer one, and ``queued`` is only inserted. redis-py is imported only when chosen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from surge.errors import ResultStoreError
from surge.results.interface import TaskRecord

Clock = Callable[[], float]

# KEYS: the task's hash. ARGV: task, status, attempts, now, ttl (ms), result, error.
_WRITE = """
local current = redis.call('HMGET', KEYS[1], 'status', 'attempts')
if ARGV[2] == 'queued' then
  if current[1] then return 0 end
  redis.call('HSET', KEYS[1], 'task', ARGV[1], 'status', 'queued', 'attempts', 0,
             'created_at', ARGV[4], 'updated_at', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
if current[1] == 'succeeded' or current[1] == 'dead' then return 0 end
if current[2] and tonumber(ARGV[3]) < tonumber(current[2]) then return 0 end
redis.call('HSET', KEYS[1], 'task', ARGV[1], 'status', ARGV[2], 'attempts', ARGV[3],
           'updated_at', ARGV[4], 'result', ARGV[6], 'error', ARGV[7])
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[4])
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
        self._clock = clock
        # A blocking pool: a burst of writes waits for a connection instead of failing.
        pool = redis_asyncio.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=10.0,
            socket_timeout=10.0, socket_connect_timeout=5.0,
        )
        self._redis = redis_asyncio.Redis.from_pool(pool)
        self._write_script = self._redis.register_script(_WRITE)

    async def mark_queued(self, records: list[tuple[str, str]]) -> None:
        if not records:
            return
        now = self._clock()
        async with self._redis.pipeline(transaction=False) as pipeline:
            for task_id, task in records:
                await self._write_script(  # queues the call in the pipeline
                    keys=[self.prefix + task_id],
                    args=self._arguments(task, "queued", 0, now, None, None),
                    client=pipeline,
                )
            await self._guard(pipeline.execute())

    async def mark_running(self, task_id: str, task: str, attempt: int) -> None:
        await self._write(task_id, task, "running", attempt, None, None)

    async def mark_succeeded(self, task_id: str, task: str, attempts: int, result: Any) -> None:
        await self._write(task_id, task, "succeeded", attempts, orjson.dumps(result), None)

    async def mark_failed(self, task_id: str, task: str, attempts: int, error: str) -> None:
        await self._write(task_id, task, "failed", attempts, None, error)

    async def mark_dead(self, task_id: str, task: str, attempts: int, error: str) -> None:
        await self._write(task_id, task, "dead", attempts, None, error)

    async def get(self, task_id: str) -> TaskRecord | None:
        stored = await self._guard(self._redis.hgetall(self.prefix + task_id))
        if not stored:
            return None
        fields = {key.decode(): value for key, value in stored.items()}
        result, error = fields.get("result", b""), fields.get("error", _NO_ERROR.encode())
        return TaskRecord(
            id=task_id,
            task=fields["task"].decode(),
            status=fields["status"].decode(),
            attempts=int(fields["attempts"]),
            created_at=float(fields["created_at"]),
            updated_at=float(fields["updated_at"]),
            result=orjson.loads(result) if result else None,
            error=None if error == _NO_ERROR.encode() else error.decode(),
        )

    async def close(self) -> None:
        await self._redis.aclose()

    async def _write(self, task_id: str, task: str, status: str, attempts: int,
                     result: bytes | None, error: str | None) -> None:
        arguments = self._arguments(task, status, attempts, self._clock(), result, error)
        await self._guard(self._write_script(keys=[self.prefix + task_id], args=arguments))

    def _arguments(self, task: str, status: str, attempts: int, now: float,
                   result: bytes | None, error: str | None) -> list[Any]:
        return [task, status, attempts, repr(now), int(self.ttl * 1000), result or b"",
                _NO_ERROR if error is None else error]

    async def _guard(self, pending: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await pending
        except (RedisError, OSError) as exc:
            raise ResultStoreError(f"redis result store at {self.url}: {exc}") from exc
