"""The embedded result store: one SQLite file in WAL mode shared by every local process.

Gateway processes insert ``queued`` records and read them back for ``GET /tasks/<id>``;
worker processes record running / succeeded / failed / dead. The rules that keep a record
sane whatever order the writers arrive in live in the SQL itself (``_UPSERT``), so they hold
across processes, not only within one:

* a final state (``succeeded``, ``dead``) is never overwritten;
* a write about an older attempt never replaces a newer attempt's state;
* ``queued`` is only ever inserted, never written over an existing record.

Threading: reads run inline on the caller's loop (a primary-key lookup in WAL mode takes a
few microseconds and never waits for a writer). Writes go to one thread per store with its
own connection, because a commit can wait for another process's write lock (up to the busy
timeout) or a checkpoint's fsync, and that must not stall an event loop. Writes that arrive
while the thread is busy are committed together in the next transaction (group commit), so
many concurrent workers cost one commit per batch, not one each.

Durability: ``synchronous=NORMAL`` — a committed result survives a crash of any process; an
OS crash or power loss may lose the last few results (never corrupts the file). Task results
are a convenience; the queue holds the durable promise.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from surge.errors import ResultStoreError
from surge.results.interface import TaskRecord

Clock = Callable[[], float]

BUSY_TIMEOUT_MS = 10_000
PURGE_INTERVAL = 60.0  # seconds between sweeps for expired records, per process
PURGE_CHUNK = 5_000  # rows deleted per statement, so a sweep never holds the lock for long

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    result BLOB,
    error TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_by_expiry ON tasks (expires_at);
"""

_INSERT_QUEUED = """
INSERT INTO tasks (id, task, status, attempts, created_at, updated_at, expires_at)
VALUES (?, ?, 'queued', 0, ?, ?, ?)
ON CONFLICT (id) DO NOTHING
"""

_UPSERT = """
INSERT INTO tasks (id, task, status, attempts, created_at, updated_at, expires_at, result, error)
VALUES (:id, :task, :status, :attempts, :now, :now, :expires_at, :result, :error)
ON CONFLICT (id) DO UPDATE SET
    task = excluded.task,
    status = excluded.status,
    attempts = excluded.attempts,
    updated_at = excluded.updated_at,
    expires_at = excluded.expires_at,
    result = excluded.result,
    error = excluded.error
WHERE tasks.status NOT IN ('succeeded', 'dead') AND excluded.attempts >= tasks.attempts
"""

_SELECT = """
SELECT id, task, status, attempts, created_at, updated_at, result, error
FROM tasks WHERE id = ? AND expires_at > ?
"""

_PURGE = """
DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE expires_at <= ? LIMIT ?)
"""


@dataclass(slots=True)
class _Write:
    """One pending write: the SQL, its parameters, and how to tell the caller it is done."""

    sql: str
    rows: list[Any]
    done: asyncio.Future[None]


def connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                 check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _retry_while_locked(lambda: connection.execute("PRAGMA journal_mode = WAL"))
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection


def _retry_while_locked(step: Callable[[], object], attempts: int = 100) -> None:
    """Switching a new file to WAL takes an exclusive lock that SQLite does not wait for
    (no busy handler): when several processes open a fresh store at once — a worker group
    forking its processes — the losers get "database is locked" at once. Try again."""
    for attempt in range(attempts):
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


class SqliteResultStore:
    """``ResultStore`` over an SQLite file; safe to open from several processes at once."""

    def __init__(self, path: str | Path, ttl: float, *, clock: Clock = time.time) -> None:
        self.path = Path(path)
        self.ttl = ttl
        self._clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._reader = connect(self.path)
            reader = self._reader
            _retry_while_locked(lambda: reader.executescript(_SCHEMA))
        except sqlite3.Error as exc:
            raise ResultStoreError(f"cannot open the result store {self.path}: {exc}") from exc
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="surge-results")
        self._writer: sqlite3.Connection | None = None  # created in the writer thread
        self._pending: list[_Write] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None
        self._next_purge_at = 0.0
        self._closed = False

    # ResultStore
    async def mark_queued(self, records: list[tuple[str, str]]) -> None:
        if not records:
            return
        now = self._clock()
        rows = [(task_id, task, now, now, now + self.ttl) for task_id, task in records]
        await self._write(_INSERT_QUEUED, rows)

    async def mark_running(self, task_id: str, task: str, attempt: int) -> None:
        await self._upsert(task_id, task, "running", attempt, None, None)

    async def mark_succeeded(self, task_id: str, task: str, attempts: int, result: Any) -> None:
        await self._upsert(task_id, task, "succeeded", attempts, orjson.dumps(result), None)

    async def mark_failed(self, task_id: str, task: str, attempts: int, error: str) -> None:
        await self._upsert(task_id, task, "failed", attempts, None, error)

    async def mark_dead(self, task_id: str, task: str, attempts: int, error: str) -> None:
        await self._upsert(task_id, task, "dead", attempts, None, error)

    async def get(self, task_id: str) -> TaskRecord | None:
        self._check_open()
        try:
            row = self._reader.execute(_SELECT, (task_id, self._clock())).fetchone()
        except sqlite3.Error as exc:
            raise ResultStoreError(f"reading task {task_id}: {exc}") from exc
        if row is None:
            return None
        record_id, task, status, attempts, created_at, updated_at, result, error = row
        return TaskRecord(
            id=record_id, task=task, status=status, attempts=attempts,
            created_at=created_at, updated_at=updated_at,
            result=orjson.loads(result) if result is not None else None, error=error,
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True  # no new writes; the ones already pending still commit
        if self._flusher is not None:
            await self._flusher
        await asyncio.get_running_loop().run_in_executor(self._writer_thread, self._close_writer)
        self._writer_thread.shutdown(wait=True)
        self._reader.close()

    def purge_expired(self) -> int:
        """Delete expired records now (the writer does this every PURGE_INTERVAL anyway)."""
        connection = connect(self.path)
        try:
            return self._purge(connection, self._clock())
        finally:
            connection.close()

    # writing
    async def _upsert(self, task_id: str, task: str, status: str, attempts: int,
                      result: bytes | None, error: str | None) -> None:
        now = self._clock()
        row = {"id": task_id, "task": task, "status": status, "attempts": attempts, "now": now,
               "expires_at": now + self.ttl, "result": result, "error": error}
        await self._write(_UPSERT, [row])

    async def _write(self, sql: str, rows: list[Any]) -> None:
        self._check_open()
        loop = asyncio.get_running_loop()
        write = _Write(sql, rows, loop.create_future())
        self._pending.append(write)
        if not self._flushing:
            self._flushing = True
            self._flusher = loop.create_task(self._flush_loop())
        await write.done

    async def _flush_loop(self) -> None:
        """Commit everything pending in one transaction, repeat while more arrived meanwhile."""
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await loop.run_in_executor(self._writer_thread, self._commit, batch)
                except Exception as exc:
                    error = ResultStoreError(f"writing task records: {exc}")
                    for write in batch:
                        if not write.done.done():
                            write.done.set_exception(error)
                    continue
                for write in batch:
                    if not write.done.done():
                        write.done.set_result(None)
        finally:
            self._flushing = False

    def _commit(self, batch: list[_Write]) -> None:
        """Runs in the writer thread."""
        if self._writer is None:
            self._writer = connect(self.path)
        connection = self._writer
        connection.execute("BEGIN IMMEDIATE")
        try:
            for write in batch:
                connection.executemany(write.sql, write.rows)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        now = self._clock()
        if now >= self._next_purge_at:
            self._next_purge_at = now + PURGE_INTERVAL
            self._purge(connection, now)

    @staticmethod
    def _purge(connection: sqlite3.Connection, now: float) -> int:
        deleted = 0
        while True:
            cursor = connection.execute(_PURGE, (now, PURGE_CHUNK))
            deleted += cursor.rowcount
            if cursor.rowcount < PURGE_CHUNK:
                return deleted

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _check_open(self) -> None:
        if self._closed:
            raise ResultStoreError("the result store is closed")
