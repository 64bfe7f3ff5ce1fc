"""Result store timings behind the threading choice in surge/results/sqlite.py.

Not collected by pytest. Run: .venv/bin/python tests/results/bench_store.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from surge.results.sqlite import SqliteResultStore, connect


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteResultStore(Path(directory) / "results.db", 3600)
        await store.mark_queued([(f"t{i}", "task") for i in range(100_000)])

        count = 20_000
        started = time.perf_counter()
        for i in range(count):
            await store.get(f"t{i * 5}")
        print(f"get (inline, by primary key):         {_micros(started, count):7.1f} µs")

        count = 2_000
        started = time.perf_counter()
        for i in range(count):
            await store.mark_running(f"t{i}", "task", 1, "owner")
        print(f"one write at a time (writer thread):  {_micros(started, count):7.1f} µs")

        direct = connect(store.path)
        started = time.perf_counter()
        for i in range(count):
            direct.execute("BEGIN IMMEDIATE")
            direct.execute("UPDATE tasks SET attempts = 2 WHERE id = ?", (f"t{i}",))
            direct.execute("COMMIT")
        print(f"one commit inline, no contention:     {_micros(started, count):7.1f} µs")
        direct.close()

        count = 20_000
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(store.mark_failed(f"t{i}", "task", 3, "e") for i in range(count)))
        elapsed = time.perf_counter() - started
        print(f"{count} concurrent writes (group commit): {count / elapsed:7.0f} writes/s")
        # CPU time (both threads) says more than the rate on a machine shared with others.
        print(f"  CPU per write:                      {_micros_cpu(cpu, count):7.1f} µs")
        cpu = time.process_time()
        await asyncio.gather(*(store.mark_succeeded(f"t{i}", "task", 3, {"n": i})
                               for i in range(count)))
        print(f"  CPU per write (succeeded, result):  {_micros_cpu(cpu, count):7.1f} µs")
        await store.close()


def _micros(started: float, count: int) -> float:
    return (time.perf_counter() - started) / count * 1e6


def _micros_cpu(started: float, count: int) -> float:
    return (time.process_time() - started) / count * 1e6


if __name__ == "__main__":
    asyncio.run(main())
