"""The ResultStore rules, run against every implementation (SQLite, Redis, memory): the
transition table of ``surge.results.rules``, the history, and Idempotency-Key bindings."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from queue_client.servers import redis_server
from surge.results.interface import ResultStore, TaskRecord
from surge.results.memory import MemoryResultStore
from surge.results.redis_store import RedisResultStore
from surge.results.rules import HISTORY_LIMIT, TRANSITIONS
from surge.results.sqlite import SqliteResultStore

StoreFactory = Callable[[], ResultStore]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis-results")) as url:
        yield url


@pytest.fixture(params=["sqlite", "redis", "memory"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    if request.param == "sqlite":
        return lambda: SqliteResultStore(tmp_path / "results.db", 3600)
    if request.param == "memory":
        return lambda: MemoryResultStore(3600)
    url = request.getfixturevalue("redis_url")
    prefix = f"test:{request.node.name}:"
    return lambda: RedisResultStore(url, 3600, prefix=prefix)


def run(make_store: StoreFactory, scenario: Callable[[ResultStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = make_store()
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(main())


def test_implements_the_protocol(make_store: StoreFactory) -> None:
    async def scenario(store: ResultStore) -> None:
        assert isinstance(store, ResultStore)
        assert await store.get("never-written") is None

    run(make_store, scenario)


def test_lifecycle_to_success(make_store: StoreFactory) -> None:
    async def scenario(store: ResultStore) -> None:
        await store.mark_queued([("t1", "resize"), ("t2", "resize")])
        record = await store.get("t1")
        assert record is not None
        assert (record.status, record.attempts, record.task) == ("queued", 0, "resize")
        assert record.result is None and record.error is None
        assert await store.mark_running("t1", "resize", 1, "send-1")
        await store.mark_failed("t1", "resize", 1, "boom")
        record = await store.get("t1")
        assert record is not None and (record.status, record.error) == ("failed", "boom")
        assert await store.mark_running("t1", "resize", 2, "send-1")
        await store.mark_succeeded("t1", "resize", 2, {"size": [640, 480], "ok": True})
        record = await store.get("t1")
        assert record is not None
        assert record.status == "succeeded" and record.attempts == 2 and record.error is None
        assert record.result == {"size": [640, 480], "ok": True}
        assert record.created_at <= record.updated_at
        assert record.to_json()["status"] == "succeeded"
        assert changes(record) == [("queued", 0), ("running", 1), ("failed", 1), ("running", 2),
                                   ("succeeded", 2)]
        assert [c["status"] for c in record.to_json()["history"]][-1] == "succeeded"

    run(make_store, scenario)


def changes(record: TaskRecord | None) -> list[tuple[str, int]]:
    assert record is not None
    return [(change.status, change.attempts) for change in record.history]


def test_only_succeeded_is_final(make_store: StoreFactory) -> None:
    async def scenario(store: ResultStore) -> None:
        await store.mark_succeeded("done", "t", 1, 42)
        assert not await store.mark_running("done", "t", 9, "another")
        await store.mark_failed("done", "t", 9, "late failure")
        await store.mark_dead("done", "t", 9, "late dead")
        await store.mark_queued([("done", "t")])
        done = await store.get("done")
        assert done is not None
        assert (done.status, done.result, done.attempts) == ("succeeded", 42, 1)
        assert changes(done) == [("succeeded", 1)]

    run(make_store, scenario)


def test_redriven_dead_task_runs_again_and_its_history_shows_it(
        make_store: StoreFactory) -> None:
    """A task dead-lettered after 5 attempts, moved back by a redrive (its receive count
    starts afresh), runs again and succeeds: its record follows, the old error goes."""
    async def scenario(store: ResultStore) -> None:
        await store.mark_queued([("t", "job")])
        for attempt in range(1, 6):
            assert await store.mark_running("t", "job", attempt, "send-1")
            await store.mark_failed("t", "job", attempt, f"boom {attempt}")
        await store.mark_dead("t", "job", 5, "gave up after 5 attempts")
        record = await store.get("t")
        assert record is not None
        assert (record.status, record.error) == ("dead", "gave up after 5 attempts")
        assert await store.mark_running("t", "job", 1, "send-1")  # the redriven message
        record = await store.get("t")
        assert record is not None and (record.status, record.attempts, record.error) == (
            "running", 1, None)
        await store.mark_succeeded("t", "job", 1, "ok")
        record = await store.get("t")
        assert record is not None and (record.status, record.result, record.error) == (
            "succeeded", "ok", None)
        assert changes(record)[-4:] == [("failed", 5), ("dead", 5), ("running", 1),
                                        ("succeeded", 1)]

    run(make_store, scenario)


def test_a_second_copy_waits_for_the_first(make_store: StoreFactory) -> None:
    """Two sends of one task (an enqueue retried with the same Idempotency-Key): while one
    holds the task (running, or failed and waiting for its retry) the other is refused; its
    own redeliveries are not; after the holder died, either may run it again."""
    async def scenario(store: ResultStore) -> None:
        await store.mark_queued([("t", "job")])
        assert await store.mark_running("t", "job", 1, "send-1")
        assert not await store.mark_running("t", "job", 1, "send-2")
        assert await store.mark_running("t", "job", 2, "send-1")  # visibility ran out
        await store.mark_failed("t", "job", 2, "boom")
        assert not await store.mark_running("t", "job", 3, "send-2")
        record = await store.get("t")
        assert record is not None and (record.status, record.attempts) == ("failed", 2)
        await store.mark_dead("t", "job", 2, "poison")
        assert await store.mark_running("t", "job", 1, "send-2")
        assert not await store.mark_running("t", "job", 1, "send-1")  # now send-2 holds it
        await store.mark_succeeded("t", "job", 1, None)
        assert not await store.mark_running("t", "job", 1, "send-2")
        assert changes(await store.get("t")) == [
            ("queued", 0), ("running", 1), ("running", 2), ("failed", 2), ("dead", 2),
            ("running", 1), ("succeeded", 1)]

    run(make_store, scenario)


def test_every_status_pair_follows_the_table(make_store: StoreFactory) -> None:
    """Each status written over each status a record can be in: applied exactly when the
    table lists the pair (with an owner and attempt that satisfy any guard)."""
    statuses = ["queued", "running", "failed", "succeeded", "dead"]

    async def write(store: ResultStore, task_id: str, status: str) -> None:
        """Attempt 1 by the delivery "owner", satisfying any guard the table may ask."""
        if status == "running":
            await store.mark_running(task_id, "t", 1, "owner")
        elif status == "failed":
            await store.mark_failed(task_id, "t", 1, "e")
        elif status == "dead":
            await store.mark_dead(task_id, "t", 1, "e")
        else:
            await store.mark_succeeded(task_id, "t", 1, "r")

    async def scenario(store: ResultStore) -> None:
        for before in statuses:
            for written in ["running", "failed", "succeeded", "dead"]:
                task_id = f"{before}-{written}"
                await store.mark_queued([(task_id, "t")])
                if before != "queued":  # reach it through running, as a worker does
                    await write(store, task_id, "running")
                if before not in ("queued", "running"):
                    await write(store, task_id, before)
                earlier = await store.get(task_id)
                assert earlier is not None and earlier.status == before
                await write(store, task_id, written)
                record = await store.get(task_id)
                assert record is not None and earlier is not None
                applied = len(record.history) == len(earlier.history) + 1
                assert applied == ((before, written) in TRANSITIONS), (before, written)
                assert record.status == (written if applied else before)

    run(make_store, scenario)


def test_history_keeps_the_newest_changes(make_store: StoreFactory) -> None:
    async def scenario(store: ResultStore) -> None:
        await store.mark_queued([("t", "job")])
        for attempt in range(1, HISTORY_LIMIT + 3):
            assert await store.mark_running("t", "job", attempt, "m")
        assert changes(await store.get("t")) == [
            ("running", attempt) for attempt in range(3, HISTORY_LIMIT + 3)]

    run(make_store, scenario)


def test_idempotency_key_binds_once_with_the_queued_record(make_store: StoreFactory) -> None:
    async def scenario(store: ResultStore) -> None:
        first = await store.bind_key("k1", "task-a", "job", "fp-a", 60)
        assert (first.task_id, first.fingerprint, first.created) == ("task-a", "fp-a", True)
        record = await store.get("task-a")
        assert record is not None and (record.status, record.task) == ("queued", "job")
        again = await store.bind_key("k1", "task-b", "job", "fp-b", 60)
        assert (again.task_id, again.fingerprint, again.created) == ("task-a", "fp-a", False)
        assert await store.get("task-b") is None  # a refused binding records nothing
        assert await store.mark_running("task-a", "job", 1, "m")
        await store.bind_key("k1", "task-c", "job", "fp-c", 60)
        record = await store.get("task-a")
        assert record is not None and record.status == "running"  # queued is only inserted
        other = await store.bind_key("k2", "task-d", "job", "fp-d", 60)
        assert other.created and other.task_id == "task-d"
        results = await asyncio.gather(*(store.bind_key("k3", f"race-{i}", "job", "fp", 60)
                                         for i in range(20)))
        assert sum(binding.created for binding in results) == 1
        assert len({binding.task_id for binding in results}) == 1
        for forged in ("idempotency-key:k1", "-idempotency-key:k1", ":k1", "", "\x00",
                       "x" * 10_000):  # what GET /tasks/<id> may ask
            assert await store.get(forged) is None
        await store.bind_key("short", "task-e", "job", "fp-e", 0.05)
        await asyncio.sleep(0.1)
        expired = await store.bind_key("short", "task-f", "job", "fp-f", 60)
        assert expired.created and expired.task_id == "task-f"

    run(make_store, scenario)


def test_queued_never_overwrites_and_older_attempts_lose(make_store: StoreFactory) -> None:
    async def scenario(store: ResultStore) -> None:
        assert await store.mark_running("t", "job", 3, "m")
        await store.mark_queued([("t", "job")])  # the gateway's insert lands after the worker
        await store.mark_failed("t", "job", 2, "stale report from an earlier attempt")
        record = await store.get("t")
        assert record is not None and (record.status, record.attempts) == ("running", 3)

    run(make_store, scenario)


def test_racing_writers_leave_the_final_state(make_store: StoreFactory) -> None:
    async def scenario(store: ResultStore) -> None:
        ids = [f"r{i}" for i in range(200)]
        await store.mark_queued([(i, "t") for i in ids])
        await asyncio.gather(
            *(store.mark_succeeded(i, "t", 1, i) for i in ids),
            *(store.mark_failed(i, "t", 1, "lost") for i in ids),
            *(store.mark_running(i, "t", 1, "m") for i in ids),
        )
        records = [await store.get(i) for i in ids]
        assert all(r is not None and r.status == "succeeded" for r in records)

    run(make_store, scenario)
