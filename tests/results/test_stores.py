"""The ResultStore rules, run against every implementation (SQLite and Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from queue_client.servers import redis_server
from surge.results.interface import ResultStore
from surge.results.redis_store import RedisResultStore
from surge.results.sqlite import SqliteResultStore

StoreFactory = Callable[[], ResultStore]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis-results")) as url:
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    if request.param == "sqlite":
        return lambda: SqliteResultStore(tmp_path / "results.db", 3600)
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
        await store.mark_running("t1", "resize", 1)
        await store.mark_failed("t1", "resize", 1, "boom")
        record = await store.get("t1")
        assert record is not None and (record.status, record.error) == ("failed", "boom")
        await store.mark_running("t1", "resize", 2)
        await store.mark_succeeded("t1", "resize", 2, {"size": [640, 480], "ok": True})
        record = await store.get("t1")
        assert record is not None
        assert record.status == "succeeded" and record.attempts == 2 and record.error is None
        assert record.result == {"size": [640, 480], "ok": True}
        assert record.created_at <= record.updated_at
        assert record.to_json()["status"] == "succeeded"

    run(make_store, scenario)


def test_final_states_are_never_overwritten(make_store: StoreFactory) -> None:
    async def scenario(store: ResultStore) -> None:
        await store.mark_succeeded("done", "t", 1, 42)
        await store.mark_dead("dead", "t", 5, "poison")
        for task_id in ("done", "dead"):
            await store.mark_failed(task_id, "t", 9, "late failure")
            await store.mark_running(task_id, "t", 9)
            await store.mark_queued([(task_id, "t")])
        await store.mark_dead("done", "t", 9, "late dead")
        await store.mark_succeeded("dead", "t", 9, "late success")
        done, dead = await store.get("done"), await store.get("dead")
        assert done is not None and dead is not None
        assert (done.status, done.result, done.attempts) == ("succeeded", 42, 1)
        assert (dead.status, dead.error, dead.attempts) == ("dead", "poison", 5)

    run(make_store, scenario)


def test_queued_never_overwrites_and_older_attempts_lose(make_store: StoreFactory) -> None:
    async def scenario(store: ResultStore) -> None:
        await store.mark_running("t", "job", 3)
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
            *(store.mark_running(i, "t", 1) for i in ids),
        )
        records = [await store.get(i) for i in ids]
        assert all(r is not None and r.status == "succeeded" for r in records)

    run(make_store, scenario)
