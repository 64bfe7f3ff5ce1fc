"""The SQLite result store: lifecycle rules, TTL, group commit, and several processes at once."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from surge.config.loader import load_settings
from surge.errors import ConfigError, ResultStoreError
from surge.results import open_result_store
from surge.results.sqlite import SqliteResultStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def run(path: Path, scenario: Callable[[SqliteResultStore, FakeClock], Awaitable[None]],
        ttl: float = 3600) -> None:
    async def main() -> None:
        clock = FakeClock()
        store = SqliteResultStore(path, ttl, clock=clock)
        try:
            await scenario(store, clock)
        finally:
            await store.close()

    asyncio.run(main())


def test_records_expire_after_ttl_and_are_purged(tmp_path: Path) -> None:
    async def scenario(store: SqliteResultStore, clock: FakeClock) -> None:
        await store.mark_queued([("old", "t"), ("new", "t")])
        clock.now += 50
        await store.mark_running("new", "t", 1, "m")  # an update extends the record's life
        clock.now += 60
        assert await store.get("old") is None
        assert await store.get("new") is not None
        assert store.purge_expired() == 1
        with sqlite3.connect(store.path) as check:
            assert check.execute("SELECT id FROM tasks").fetchall() == [("new",)]

    run(tmp_path / "r.db", scenario, ttl=100)


def test_a_write_after_expiry_starts_a_fresh_record(tmp_path: Path) -> None:
    """An expired record is as good as absent (``get`` no longer sees it): the next write
    makes a new one, with a new history and no owner, as a store without it would."""
    async def scenario(store: SqliteResultStore, clock: FakeClock) -> None:
        assert await store.mark_running("t", "job", 1, "first")
        clock.now += 200
        assert await store.get("t") is None
        assert await store.mark_running("t", "job", 1, "second")  # no longer held by "first"
        record = await store.get("t")
        assert record is not None and record.created_at == clock.now
        assert [(c.status, c.at) for c in record.history] == [("running", clock.now)]

    run(tmp_path / "r.db", scenario, ttl=100)


_FIRST_SCHEMA = """
CREATE TABLE tasks (id TEXT PRIMARY KEY, task TEXT NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    expires_at REAL NOT NULL, result BLOB, error TEXT) WITHOUT ROWID;
INSERT INTO tasks VALUES ('old', 'job', 'dead', 3, 1.0, 2.0, 9e18, NULL, 'gave up');
"""


def test_a_store_written_by_the_first_release_is_upgraded(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "r.db") as first:
        first.executescript(_FIRST_SCHEMA)

    async def scenario(store: SqliteResultStore, clock: FakeClock) -> None:
        record = await store.get("old")
        assert record is not None and (record.status, record.history) == ("dead", ())
        assert await store.mark_running("old", "job", 1, "m")  # redriven
        record = await store.get("old")
        assert record is not None and [c.status for c in record.history] == ["running"]

    run(tmp_path / "r.db", scenario)


def test_concurrent_writes_are_group_committed(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    commits: list[int] = []
    original = SqliteResultStore._commit

    def counting_commit(self: SqliteResultStore, batch: list) -> list:  # type: ignore[type-arg]
        commits.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(SqliteResultStore, "_commit", counting_commit)

    async def scenario(store: SqliteResultStore, clock: FakeClock) -> None:
        await store.mark_queued([(f"q{i}", "t") for i in range(1000)])  # one transaction
        await asyncio.gather(*(store.mark_succeeded(f"q{i}", "t", 1, i) for i in range(300)))
        record = await store.get("q299")
        assert record is not None and record.result == 299

    run(tmp_path / "r.db", scenario)
    assert commits[0] == 1
    assert sum(commits) == 301
    assert len(commits) < 301 / 5, commits  # many writes per commit


def test_closed_store_refuses_writes(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SqliteResultStore(tmp_path / "r.db", 60)
        await store.close()
        with pytest.raises(ResultStoreError):
            await store.mark_running("t", "t", 1, "m")

    asyncio.run(scenario())


_WRITER = textwrap.dedent("""
    import asyncio, sys
    from surge.results.sqlite import SqliteResultStore

    async def main(path, prefix, outcome):
        store = SqliteResultStore(path, 3600)
        await store.mark_queued([(f"{prefix}{i}", "t") for i in range(300)])
        for i in range(300):
            await store.mark_running(f"shared{i}", "t", 1, prefix)
            if outcome == "succeeded":
                await store.mark_succeeded(f"shared{i}", "t", 1, {"by": prefix})
            else:
                await store.mark_failed(f"shared{i}", "t", 1, "lost the race")
            await store.mark_running(f"{prefix}{i}", "t", 1, prefix)
        await asyncio.gather(*(store.mark_succeeded(f"{prefix}{i}", "t", 1, i)
                               for i in range(300)))
        await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
""")


def test_two_processes_writing_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), prefix, outcome],
                         stderr=subprocess.PIPE)
        for prefix, outcome in (("a", "succeeded"), ("b", "failed"))
    ]

    async def read_while_writing() -> None:
        store = SqliteResultStore(path, 3600)
        while any(w.poll() is None for w in writers):
            await store.get("a1")  # reads never wait for the writers
            await asyncio.sleep(0.005)
        for prefix in "ab":
            for i in range(300):
                record = await store.get(f"{prefix}{i}")
                assert record is not None and record.status == "succeeded", (prefix, i)
        for i in range(300):
            record = await store.get(f"shared{i}")
            # whichever process wrote first, the success is what remains
            assert record is not None and record.status == "succeeded", i
            assert record.result == {"by": "a"}
        await store.close()

    asyncio.run(read_while_writing())
    for writer in writers:
        _, stderr = writer.communicate(timeout=60)
        assert writer.returncode == 0, stderr.decode()


def test_open_result_store_from_settings(tmp_path: Path) -> None:
    settings = load_settings(None, {"data_dir": str(tmp_path / "data")})
    store = open_result_store(settings)
    assert isinstance(store, SqliteResultStore)
    assert store.path == tmp_path / "data" / "results.db"
    asyncio.run(store.close())
    bad = load_settings(None, {"result_backend.url": "mysql://x"})
    with pytest.raises(ConfigError, match=r"result_backend\.url"):
        open_result_store(bad)
