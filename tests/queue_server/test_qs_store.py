"""Group commit and restore, in-process: answers wait for the commit; concurrent calls share one."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from surge.queue.server.broker import Broker
from surge.queue.server.service import CallContext, QueueService
from surge.queue.server.store import SqliteStore, Statement, StoreFailed

CONTEXT = CallContext("http://127.0.0.1:1", "AKID")


class ControlledStore(SqliteStore):
    """A store whose commits the test can hold back or break."""

    gate: threading.Event | None = None
    broken = False

    def _commit(self, statements: list[Statement]) -> None:
        if self.broken:
            raise OSError("disk full")
        if self.gate is not None:
            self.gate.wait(10)
        super()._commit(statements)


def test_sends_wait_for_one_shared_commit_and_survive_reopen(tmp_path: Path) -> None:
    database = tmp_path / "queue.db"

    async def main() -> None:
        store = ControlledStore(database)
        service = QueueService(Broker(store), store)
        store.start()
        await service.call("CreateQueue", {"QueueName": "q"}, CONTEXT)
        gate = store.gate = threading.Event()
        commits_before = store.commits
        sends = [asyncio.create_task(service.call(
            "SendMessage", {"QueueUrl": "q", "MessageBody": f"m{i}"}, CONTEXT))
            for i in range(50)]
        await asyncio.sleep(0.2)
        assert not any(task.done() for task in sends), "answered before the commit"
        gate.set()
        await asyncio.gather(*sends)
        assert store.commits - commits_before <= 2, "concurrent sends should share a commit"
        await store.close()

    asyncio.run(main())

    reopened = SqliteStore(database)
    broker = Broker(reopened)
    assert reopened.restore(broker, 0) == 50
    assert sorted(m.body for m in broker.queues["q"].messages.values()) == sorted(
        f"m{i}" for i in range(50))
    asyncio.run(reopened.close())


def test_a_failed_commit_fails_the_callers_and_the_server(tmp_path: Path) -> None:
    async def main() -> None:
        store = ControlledStore(tmp_path / "queue.db")
        service = QueueService(Broker(store), store)
        store.start()
        await service.call("CreateQueue", {"QueueName": "q"}, CONTEXT)
        store.broken = True
        with pytest.raises(StoreFailed):
            await service.call("SendMessage", {"QueueUrl": "q", "MessageBody": "m"}, CONTEXT)
        assert isinstance(await asyncio.wait_for(store.failure(), 5), OSError)
        with pytest.raises(StoreFailed):
            await service.call("SendMessage", {"QueueUrl": "q", "MessageBody": "m"}, CONTEXT)

    asyncio.run(main())
