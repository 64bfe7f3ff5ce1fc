"""The embedded result store: one SQLite file in WAL mode shared by every local process.

Gateway processes insert ``queued`` records (and Idempotency-Key bindings) and read them back
for ``GET /tasks/<id>``; worker processes record running / succeeded / failed / dead. A
worker's write is one UPSERT whose condition is ``surge.results.rules.TRANSITIONS`` written
in SQL (``_guard_sql``), so the rules hold across processes, not only within one, at the
cost of one statement (reading the row into Python and writing it back halved the writer's
throughput). ``queued`` is only ever inserted, never written over an existing record.

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
from surge.results.interface import KeyBinding, StatusChange, TaskRecord
from surge.results.rules import (
    HISTORY_LIMIT,
    TRANSITIONS,
    Guard,
    StatusWrite,
    StoredTask,
    queued_task,
)

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
    error TEXT,
    owner TEXT,
    history TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_by_expiry ON tasks (expires_at);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_keys_by_expiry ON idempotency_keys (expires_at);
"""

# Columns added since the first release: a store written by it gets them on open.
_ADDED_COLUMNS = {"owner": "TEXT", "history": "TEXT"}

_COLUMNS = ("id, task, status, attempts, created_at, updated_at, expires_at, owner, result, "
            "error, history")

_INSERT_QUEUED = """
INSERT INTO tasks (id, task, status, attempts, created_at, updated_at, expires_at, history)
VALUES (?, ?, 'queued', 0, ?, ?, ?, ?)
ON CONFLICT (id) DO NOTHING
"""

_SELECT_CURRENT = f"SELECT {_COLUMNS} FROM tasks WHERE id = ? AND expires_at > ?"



def _guard_sql() -> str:
    """``TRANSITIONS`` as an SQL condition on the stored row (``tasks``) and the write
    (``excluded``)."""
    conditions = []
    for guard in Guard:
        pairs = ", ".join(f"'{now}>{written}'" for (now, written), kind in TRANSITIONS.items()
                          if kind is guard)
        condition = f"tasks.status || '>' || excluded.status IN ({pairs})"
        if guard is Guard.SAME_OWNER:
            condition += " AND (tasks.owner IS NULL OR tasks.owner = excluded.owner)"
        elif guard is Guard.NOT_OLDER:
            condition += " AND excluded.attempts >= tasks.attempts"
        conditions.append(f"({condition})")
    return " OR ".join(conditions)


# A record past its expiry is as good as absent (``get`` no longer sees it): it is written
# afresh. :history is the new record's history, ``[:change]``.
_WRITE = f"""
INSERT INTO tasks ({_COLUMNS})
VALUES (:id, :task, :status, :attempts, :now, :now, :expires_at, :owner, :result, :error,
        :history)
ON CONFLICT (id) DO UPDATE SET
    task = excluded.task,
    status = excluded.status,
    attempts = excluded.attempts,
    created_at = CASE WHEN tasks.expires_at <= :now THEN :now ELSE tasks.created_at END,
    updated_at = :now,
    expires_at = excluded.expires_at,
    owner = CASE WHEN excluded.status = 'running' THEN excluded.owner
                 WHEN tasks.expires_at <= :now THEN NULL ELSE tasks.owner END,
    result = excluded.result,
    error = excluded.error,
    history = CASE WHEN tasks.expires_at <= :now OR tasks.history IS NULL THEN :history
                   ELSE json_insert(CASE WHEN json_array_length(tasks.history) >= {HISTORY_LIMIT}
                                         THEN json_remove(tasks.history, '$[0]')
                                         ELSE tasks.history END,
                                    '$[#]', json(:change)) END
WHERE tasks.expires_at <= :now OR {_guard_sql()}
"""

_SELECT_KEY = """
SELECT task_id, fingerprint, sent FROM idempotency_keys WHERE key = ? AND expires_at > ?
"""

_KEY_SENT = "UPDATE idempotency_keys SET sent = 1 WHERE key = ?"

_BIND_KEY = """
INSERT OR REPLACE INTO idempotency_keys (key, task_id, fingerprint, expires_at)
VALUES (?, ?, ?, ?)
"""

_PURGE = """
DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE expires_at <= ? LIMIT ?)
"""

_PURGE_KEYS = """
DELETE FROM idempotency_keys
WHERE key IN (SELECT key FROM idempotency_keys WHERE expires_at <= ? LIMIT ?)
"""

Job = Callable[[sqlite3.Connection], Any]


@dataclass(slots=True)
class _Write:
    """One pending write: what to run in the writer's transaction, and the future that gets
    its return value once the transaction committed."""

    job: Job
    done: asyncio.Future[Any]


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
            _retry_while_locked(lambda: _add_missing_columns(reader))
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
        history = _history_json((StatusChange("queued", 0, now),))
        rows = [(task_id, task, now, now, now + self.ttl, history) for task_id, task in records]

        def insert(connection: sqlite3.Connection) -> None:
            connection.executemany(_INSERT_QUEUED, rows)

        await self._write(insert)

    async def bind_key(self, key: str, task_id: str, task: str, fingerprint: str,
                       ttl: float) -> KeyBinding:
        now = self._clock()
        queued = queued_task(task_id, task, now, self.ttl)

        def bind(connection: sqlite3.Connection) -> KeyBinding:
            bound = connection.execute(_SELECT_KEY, (key, now)).fetchone()
            if bound is not None:
                return KeyBinding(bound[0], bound[1], created=False, sent=bool(bound[2]))
            connection.execute(_BIND_KEY, (key, task_id, fingerprint, now + ttl))
            connection.execute(_INSERT_QUEUED, (task_id, task, now, now, queued.expires_at,
                                                _history_json(queued.history)))
            return KeyBinding(task_id, fingerprint, created=True)

        binding: KeyBinding = await self._write(bind)
        return binding

    async def mark_key_sent(self, key: str) -> None:
        def update(connection: sqlite3.Connection) -> None:
            connection.execute(_KEY_SENT, (key,))

        await self._write(update)

    async def mark_running(self, task_id: str, task: str, attempt: int, owner: str) -> bool:
        return await self._apply(task_id, StatusWrite(task, "running", attempt, owner=owner))

    async def mark_succeeded(self, task_id: str, task: str, attempts: int, result: Any) -> None:
        await self._apply(task_id, StatusWrite(task, "succeeded", attempts,
                                               result=orjson.dumps(result)))

    async def mark_failed(self, task_id: str, task: str, attempts: int, error: str) -> None:
        await self._apply(task_id, StatusWrite(task, "failed", attempts, error=error))

    async def mark_dead(self, task_id: str, task: str, attempts: int, error: str) -> None:
        await self._apply(task_id, StatusWrite(task, "dead", attempts, error=error))

    async def get(self, task_id: str) -> TaskRecord | None:
        self._check_open()
        try:
            row = self._reader.execute(_SELECT_CURRENT, (task_id, self._clock())).fetchone()
        except sqlite3.Error as exc:
            raise ResultStoreError(f"reading task {task_id}: {exc}") from exc
        if row is None:
            return None
        stored = _stored(row)
        return stored.record(orjson.loads(stored.result) if stored.result is not None else None)

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
    async def _apply(self, task_id: str, write: StatusWrite) -> bool:
        """Apply ``write`` to the record as it is when the writer's transaction runs."""
        now = self._clock()
        change = orjson.dumps([write.status, write.attempts, now]).decode()
        parameters = {
            "id": task_id, "task": write.task, "status": write.status,
            "attempts": write.attempts, "now": now, "expires_at": now + self.ttl,
            "owner": write.owner, "result": write.result, "error": write.error,
            "change": change, "history": f"[{change}]"}

        def upsert(connection: sqlite3.Connection) -> bool:
            # One row changed: inserted, or updated because the guard held. (RETURNING
            # would say the same and doubled the statement's cost.)
            return connection.execute(_WRITE, parameters).rowcount == 1

        applied: bool = await self._write(upsert)
        return applied

    async def _write(self, job: Job) -> Any:
        self._check_open()
        loop = asyncio.get_running_loop()
        write = _Write(job, loop.create_future())
        self._pending.append(write)
        if not self._flushing:
            self._flushing = True
            self._flusher = loop.create_task(self._flush_loop())
        return await write.done

    async def _flush_loop(self) -> None:
        """Commit everything pending in one transaction, repeat while more arrived meanwhile."""
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await loop.run_in_executor(self._writer_thread, self._commit, batch)
                except Exception as exc:
                    error = ResultStoreError(f"writing task records: {exc}")
                    for write in batch:
                        if not write.done.done():
                            write.done.set_exception(error)
                    continue
                for write, result in zip(batch, results, strict=True):
                    if not write.done.done():
                        write.done.set_result(result)
        finally:
            self._flushing = False

    def _commit(self, batch: list[_Write]) -> list[Any]:
        """Runs in the writer thread."""
        if self._writer is None:
            self._writer = connect(self.path)
        connection = self._writer
        connection.execute("BEGIN IMMEDIATE")
        try:
            results = [write.job(connection) for write in batch]
            connection.execute("COMMIT")
        except BaseException:
            # SQLite rolls back by itself on some errors (a full disk, for one).
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        now = self._clock()
        if now >= self._next_purge_at:
            self._next_purge_at = now + PURGE_INTERVAL
            self._purge(connection, now)
        return results

    @staticmethod
    def _purge(connection: sqlite3.Connection, now: float) -> int:
        deleted = 0
        for statement in (_PURGE, _PURGE_KEYS):
            while True:
                cursor = connection.execute(statement, (now, PURGE_CHUNK))
                deleted += cursor.rowcount
                if cursor.rowcount < PURGE_CHUNK:
                    break
        return deleted

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _check_open(self) -> None:
        if self._closed:
            raise ResultStoreError("the result store is closed")


def _add_missing_columns(connection: sqlite3.Connection) -> None:
    present = {row[1] for row in connection.execute("PRAGMA table_info(tasks)")}
    for name, kind in _ADDED_COLUMNS.items():
        if name not in present:
            try:
                connection.execute(f"ALTER TABLE tasks ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):  # another process added it first
                    raise


def _stored(row: tuple[Any, ...]) -> StoredTask:
    (task_id, task, status, attempts, created_at, updated_at, expires_at, owner, result,
     error, history) = row
    changes = tuple(StatusChange(*entry) for entry in orjson.loads(history)) if history else ()
    return StoredTask(task_id, task, status, attempts, created_at, updated_at, expires_at,
                      owner, result, error, changes)


def _history_json(history: tuple[StatusChange, ...]) -> str:
    return orjson.dumps([(change.status, change.attempts, change.at)
                         for change in history]).decode()
