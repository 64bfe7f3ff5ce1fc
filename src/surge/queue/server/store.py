"""The durable side of the queue server: SQLite in WAL mode, written by group commit.

The broker reports every change to this journal, which turns it into SQL appended to the
*open batch*. One writer task commits batches one after another on a dedicated thread: while
a batch is being committed, every request that arrives meanwhile adds to the next one, so
many concurrent sends share one fsync. A request answers only after ``durable()`` — the
commit of the batch holding its changes — returns.

``synchronous=FULL``: a commit is on disk (WAL fsynced) before the sender is answered, so an
acknowledged message survives power loss too, not just a killed process. With group commit
the fsync is paid once per batch, which is why FULL stays fast enough.

A full disk is a state, not a crash (``disk_full``). ``DATA_DIR/queue.reserve`` holds
``RESERVE_BYTES`` of space while there is room. The first commit that fails for want of
space releases it and is tried again, so the requests in that batch are still answered;
from then on the service refuses sends (which grow the database), while receives, deletes
and visibility changes (rows updated or removed, pages the WAL reuses) go on durably in the
reserve's room. If even that runs out, a failed batch's changes are kept, in order, and
committed ahead of the next batch (tried again every ``DISK_CHECK_INTERVAL``); its requests
are answered ``StoreFull`` (503), never acknowledged before their changes are on disk. Once
the reserve can be made again, sends are taken again. Any other database error still ends
the process (``StoreFailed``): memory and disk may disagree, the database is the truth.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from surge.queue.server.broker import Broker, QueueState, StoredMessage
from surge.queue.server.lifecycle import Lifecycle, State
from surge.queue.server.moves import MoveTask

log = logging.getLogger("surge.queue.server")

RESERVE_NAME = "queue.reserve"
RESERVE_BYTES = 8 * 1024 * 1024  # two WAL cycles (1,000 pages of 4 KiB) of updates
DISK_CHECK_INTERVAL = 1.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    attributes TEXT NOT NULL,
    tags TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    modified_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    md5_of_body TEXT NOT NULL,
    extra TEXT NOT NULL,
    state TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    visible_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL,
    first_receive_at INTEGER,
    receipt_token INTEGER NOT NULL,
    origin_queue TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, seq);
CREATE TABLE IF NOT EXISTS dedup (
    queue TEXT NOT NULL,
    key TEXT NOT NULL,
    message_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (queue, key)
);
CREATE TABLE IF NOT EXISTS move_tasks (
    handle TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    destination TEXT,
    rate INTEGER,
    started_at INTEGER NOT NULL,
    to_move INTEGER NOT NULL,
    moved INTEGER NOT NULL,
    status TEXT NOT NULL,
    failure TEXT
);
"""

Statement = tuple[str, tuple[Any, ...]]

_UPDATE_MESSAGE = (
    "UPDATE messages SET queue=?, state=?, visible_at=?, receive_count=?, first_receive_at=?, "
    "receipt_token=?, origin_queue=? WHERE seq=?"
)
_INSERT_MESSAGE = "INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"


class StoreFailed(Exception):
    """A commit failed: memory and disk may disagree, so the server must restart."""


class StoreFull(Exception):
    """The disk is full: these changes are not committed yet (they will be, in order, once
    there is room), so the request that made them must not be acknowledged."""


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL \
            or "database or disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class Reserve:
    """A file holding disk space for the database to use once the disk is full."""

    def __init__(self, path: Path, size: int = RESERVE_BYTES) -> None:
        self.path = path
        self.size = size

    def ensure(self) -> bool:
        """Hold the space (again); False when the disk has not got it."""
        if self.size <= 0:
            return True
        try:
            if self.path.stat().st_size >= self.size:
                return True
        except FileNotFoundError:
            pass
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(descriptor, 0, self.size)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as exc:
            self.release()
            if is_disk_full(exc):
                return False
            raise
        return True

    def release(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _Batch:
    __slots__ = ("done", "forced", "statements")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.statements: list[Statement] = []
        self.done: asyncio.Future[None] = loop.create_future()
        self.forced = False  # committed even with no statements of its own (carried ones)


class SqliteStore:
    """Journal of the broker, backed by one SQLite database file."""

    def __init__(self, path: str | Path, reserve_bytes: int = RESERVE_BYTES) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.reserve = Reserve(self.path.parent / RESERVE_NAME, reserve_bytes)
        # Sends are refused while true; read by the service and reported by the ping.
        self.disk_full = not self.reserve.ensure()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="surge-queue-db")
        self._open: _Batch | None = None
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self._in_flight: asyncio.Future[None] | None = None  # the batch being committed
        # Changes of batches that failed for want of space, committed ahead of the next.
        self._carried: list[Statement] = []
        self._disk_watch: asyncio.Task[None] | None = None
        self.commits = 0
        self.committed_statements = 0

    # -- start, stop ------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._open = _Batch(loop)
        self._wakeup = asyncio.Event()
        self._writer = loop.create_task(self._write_loop())
        self._disk_watch = loop.create_task(self._watch_disk())

    async def close(self) -> None:
        """Commit what is pending, stop the writer and close the database."""
        if self._disk_watch is not None:
            self._disk_watch.cancel()
        if self._writer is not None:
            try:
                await self.durable()
            except StoreFull:
                log.error("closing with changes not committed: the disk is full",
                          extra={"fields": {"statements": len(self._carried)}})
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
        self._thread.submit(self._db.close).result()
        self._thread.shutdown()

    async def failure(self) -> BaseException:
        """Wait until a commit fails; returns its error."""
        assert self._writer is not None
        try:
            await asyncio.shield(self._writer)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            return exc
        return StoreFailed("the writer stopped")

    # -- group commit -----------------------------------------------------------------------

    def _add(self, sql: str, params: tuple[Any, ...]) -> None:
        if self._open is None:  # not started: restoring or a synchronous caller
            self._db.execute(sql, params)
            return
        self._open.statements.append((sql, params))
        assert self._wakeup is not None
        self._wakeup.set()

    async def durable(self) -> None:
        """Return once every change recorded so far is committed; ``StoreFull`` when the
        disk has no room for them (they stay recorded, and are committed later)."""
        if self._failed is not None:
            raise StoreFailed("the queue database failed earlier") from self._failed
        batch = self._open
        if batch is None:
            return
        if not batch.statements:
            if self._carried:
                # Changes of a failed batch, maybe ours (a delete repeated after a 503):
                # not durable until they are committed.
                batch.forced = True
                assert self._wakeup is not None
                self._wakeup.set()
                await asyncio.shield(batch.done)
                return
            # Nothing new from us; an earlier commit still running may hold our changes.
            if self._in_flight is not None:
                await asyncio.shield(self._in_flight)
            return
        await asyncio.shield(batch.done)

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch = self._open
            assert batch is not None
            if not batch.statements and not batch.forced:
                continue
            self._open = _Batch(loop)
            self._in_flight = batch.done
            statements = self._carried + batch.statements
            try:
                await loop.run_in_executor(self._thread, self._commit_or_release, statements)
            except Exception as exc:
                if is_disk_full(exc):
                    # Kept, in order, for the next commit; this batch's requests are told.
                    self._carried = statements
                    batch.done.set_exception(StoreFull(str(exc)))
                    batch.done.exception()  # retrieved: waiters see it through durable()
                    self._in_flight = None
                    continue
                self._failed = exc
                batch.done.set_exception(StoreFailed(str(exc)))
                batch.done.exception()  # retrieved: waiters see it through durable()
                raise
            self._carried = []
            self.commits += 1
            self.committed_statements += len(statements)
            batch.done.set_result(None)
            self._in_flight = None

    def _commit_or_release(self, statements: list[Statement]) -> None:
        """Commit; the first time the disk turns out full, give the database the reserve's
        room and try once more (on the database thread)."""
        try:
            self._commit(statements)
        except Exception as exc:
            if not is_disk_full(exc) or self.disk_full:
                raise
            self.disk_full = True
            self.reserve.release()
            log.warning("the disk is full: sends are refused until there is room again",
                        extra={"fields": {"database": str(self.path)}})
            self._commit(statements)

    def _commit(self, statements: list[Statement]) -> None:
        db = self._db
        try:
            db.execute("BEGIN")
            for sql, params in statements:
                db.execute(sql, params)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                db.execute("ROLLBACK")
            raise

    async def _watch_disk(self) -> None:
        """While the disk is full: retry carried changes, and take sends again once the
        reserve can be made again."""
        while True:
            await asyncio.sleep(DISK_CHECK_INTERVAL)
            if not self.disk_full:
                continue
            if self._carried:
                assert self._open is not None and self._wakeup is not None
                self._open.forced = True
                self._wakeup.set()
            elif await asyncio.get_running_loop().run_in_executor(
                    self._thread, self.reserve.ensure):
                self.disk_full = False
                log.warning("the disk has room again: sends are taken again",
                            extra={"fields": {"database": str(self.path)}})

    # -- Journal ----------------------------------------------------------------------------

    def queue_saved(self, queue: QueueState) -> None:
        self._add(
            "INSERT OR REPLACE INTO queues VALUES (?,?,?,?,?)",
            (queue.name, orjson.dumps(queue.attributes).decode(),
             orjson.dumps(queue.tags).decode(), queue.created_at, queue.modified_at),
        )

    def queue_deleted(self, name: str) -> None:
        for table, column in (("queues", "name"), ("messages", "queue"), ("dedup", "queue")):
            self._add(f"DELETE FROM {table} WHERE {column}=?", (name,))

    def message_added(self, queue: str, message: StoredMessage) -> None:
        extra = {
            "sender_id": message.sender_id,
            "message_attributes": message.message_attributes,
            "md5_of_message_attributes": message.md5_of_message_attributes,
            "system_attributes": message.system_attributes,
            "md5_of_system_attributes": message.md5_of_system_attributes,
            "group_id": message.group_id,
            "dedup_id": message.dedup_id,
        }
        life = message.life
        self._add(_INSERT_MESSAGE, (
            message.seq, queue, message.message_id, message.body, message.md5_of_body,
            orjson.dumps(extra).decode(), life.state.value, life.sent_at, life.visible_at,
            life.receive_count, life.first_receive_at, life.receipt_token, message.origin_queue,
        ))

    def message_changed(self, queue: str, message: StoredMessage) -> None:
        life = message.life
        self._add(_UPDATE_MESSAGE, (
            queue, life.state.value, life.visible_at, life.receive_count, life.first_receive_at,
            life.receipt_token, message.origin_queue, message.seq,
        ))

    def message_removed(self, seq: int) -> None:
        self._add("DELETE FROM messages WHERE seq=?", (seq,))

    def queue_purged(self, queue: str, up_to_seq: int) -> None:
        self._add("DELETE FROM messages WHERE queue=? AND seq<?", (queue, up_to_seq))

    def dedup_recorded(self, queue: str, key: str, message_id: str, seq: int,
                       expires_at: int) -> None:
        self._add("INSERT OR REPLACE INTO dedup VALUES (?,?,?,?,?)",
                  (queue, key, message_id, seq, expires_at))

    def move_task_saved(self, task: MoveTask) -> None:
        self._add("INSERT OR REPLACE INTO move_tasks VALUES (?,?,?,?,?,?,?,?,?)",
                  (task.handle, task.source, task.destination, task.rate, task.started_at,
                   task.to_move, task.moved, task.status, task.failure))

    # -- restore ----------------------------------------------------------------------------

    def restore(self, broker: Broker, now: int) -> int:
        """Rebuild the broker from the database; returns the number of messages loaded."""
        db = self._db
        for name, attributes, tags, created, modified in db.execute(
                "SELECT name, attributes, tags, created_at, modified_at FROM queues"):
            broker.load_queue(QueueState(name, orjson.loads(attributes), created, modified,
                                         tags=orjson.loads(tags)))
        try:
            db.execute("DELETE FROM dedup WHERE expires_at<=?", (now,))
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise  # on a full disk the expired ids stay; restore ignores them below
        for queue, key, message_id, seq, expires in db.execute(
                "SELECT queue, key, message_id, seq, expires_at FROM dedup"):
            if queue in broker.queues and expires > now:
                broker.queues[queue].dedup[key] = (message_id, seq, expires)
        loaded = 0
        for row in db.execute("SELECT * FROM messages ORDER BY seq"):
            (seq, queue, message_id, body, md5, extra_text, state, sent_at, visible_at,
             receive_count, first_receive_at, receipt_token, origin_queue) = row
            extra = orjson.loads(extra_text)
            life = Lifecycle(sent_at=sent_at, visible_at=visible_at, state=State(state),
                             receive_count=receive_count, first_receive_at=first_receive_at,
                             receipt_token=receipt_token)
            broker.load_message(queue, StoredMessage(seq, message_id, body, md5, life,
                                                     origin_queue=origin_queue, **extra))
            loaded += 1
        top = db.execute("SELECT MAX(seq) FROM messages").fetchone()[0]
        dedup_top = db.execute("SELECT MAX(seq) FROM dedup").fetchone()[0]
        broker.next_seq = max(broker.next_seq, (top or 0) + 1, (dedup_top or 0) + 1)
        return loaded

    def restore_move_tasks(self) -> list[MoveTask]:
        """Message move tasks as last committed, oldest first."""
        rows = self._db.execute(
            "SELECT handle, source, destination, rate, started_at, to_move, moved, status, "
            "failure FROM move_tasks ORDER BY started_at")
        return [MoveTask(handle, source, destination, rate, started_at, to_move, moved,
                         status, failure)
                for handle, source, destination, rate, started_at, to_move, moved, status,
                failure in rows]
