"""The consumer loop in one process against the memory queue: success, retries, dead
letters, duplicates, heartbeat, time limits, concurrency bound and graceful shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import worker_sample_tasks as sample
from worker_fakes import (
    MemoryResultStore,
    create_queue_with_dlq,
    enqueue,
    enqueue_many,
    make_settings,
    queue_counts,
    wait_until,
)

from surge.queue.client.memory import MemoryQueueClient
from surge.worker.consumer import DEAD_LETTER_REASON_ATTRIBUTE, ShutdownReport
from surge.worker.runtime import WorkerRuntime

HERE = str(Path(__file__).parent)


@pytest.fixture(autouse=True)
def _reset_sample_tasks() -> None:
    sample.reset()


def worker_settings(handlers: dict[str, Any], **worker: Any) -> Any:
    return make_settings({"handlers": handlers, "python_path": ["."], "wait_time": 0.2,
                          "backoff_base": 0, "backoff_max": 0, **worker}, config_dir=HERE)


async def run_until(
    settings: Any, client: MemoryQueueClient, store: MemoryResultStore,
    done: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0,
) -> tuple[WorkerRuntime, ShutdownReport]:
    runtime = WorkerRuntime(settings, "jobs", client, store)
    running = asyncio.create_task(runtime.run())
    try:
        await wait_until(done, timeout)
    finally:
        runtime.stop()
        report = await running
    return runtime, report


def test_success_records_the_result_and_deletes() -> None:
    async def scenario() -> None:
        client, store = MemoryQueueClient(), MemoryResultStore()
        await create_queue_with_dlq(client)
        await enqueue_many(client, [("echo", {"n": i}, f"t{i}") for i in range(25)])
        settings = worker_settings({"echo": "worker_sample_tasks:echo"})
        runtime, _ = await run_until(settings, client, store,
                                     lambda: runtime_done(store, 25))
        assert await queue_counts(client) == (0, 0)
        record = store.records["t7"]
        assert (record.status, record.attempts, record.result) == \
            ("succeeded", 1, {"echo": {"n": 7}})
        assert store.statuses("t7") == ["running", "succeeded"]
        assert runtime.stats.processed == 25
        assert runtime.stats.in_flight == 0
    asyncio.run(scenario())


def runtime_done(store: MemoryResultStore, count: int, status: str = "succeeded") -> bool:
    return sum(r.status == status for r in store.records.values()) >= count


def test_async_handler_runs_on_the_loop() -> None:
    async def scenario() -> None:
        client, store = MemoryQueueClient(), MemoryResultStore()
        await create_queue_with_dlq(client)
        await enqueue(client, "double", {"n": 21}, "a1")
        settings = worker_settings({"double": "worker_sample_tasks:async_double"})
        await run_until(settings, client, store, lambda: runtime_done(store, 1))
        assert store.records["a1"].result == 42
    asyncio.run(scenario())


def test_in_flight_never_exceeds_concurrency() -> None:
    async def scenario() -> None:
        client, store = MemoryQueueClient(), MemoryResultStore()
        await create_queue_with_dlq(client)
        await enqueue_many(client, [("slow", {"seconds": 0.05, "id": f"s{i}"}, f"s{i}")
                                    for i in range(40)])
        settings = worker_settings({"slow": "worker_sample_tasks:slow"}, concurrency=3)
        most_in_flight = 0

        async def sample_queue() -> bool:
            nonlocal most_in_flight
            most_in_flight = max(most_in_flight, (await queue_counts(client))[1])
            return runtime_done(store, 40)

        await run_until(settings, client, store, sample_queue, timeout=20)
        assert sample.max_running == 3
        assert 1 <= most_in_flight <= 3
    asyncio.run(scenario())


def test_failure_retries_until_success() -> None:
    async def scenario() -> None:
        client, store = MemoryQueueClient(), MemoryResultStore()
        await create_queue_with_dlq(client, max_receive_count=5)
        await enqueue(client, "flaky", {"key": "f1", "fail_times": 2}, "f1")
        settings = worker_settings({"flaky": "worker_sample_tasks:flaky"})
        runtime, _ = await run_until(settings, client, store, lambda: runtime_done(store, 1))
        assert store.statuses("f1") == ["running", "failed", "running", "failed", "running",
                                        "succeeded"]
        assert store.records["f1"].attempts == 3
        assert (runtime.stats.failed, runtime.stats.retried) == (2, 2)
    asyncio.run(scenario())


def test_backoff_keeps_the_message_invisible() -> None:
    async def scenario() -> None:
        client, store = MemoryQueueClient(), MemoryResultStore()
        await create_queue_with_dlq(client, max_receive_count=5)
        await enqueue(client, "flaky", {"key": "b1", "fail_times": 5}, "b1")
        settings = worker_settings({"flaky": "worker_sample_tasks:flaky"},
                                   backoff_base=1000, backoff_max=1000)
        await run_until(settings, client, store, lambda: store.statuses("b1") == [
            "running", "failed"])
        await asyncio.sleep(0.3)
        assert sample.calls["b1"] == 1
        assert await queue_counts(client) == (0, 1)  # waiting out its backoff
    asyncio.run(scenario())


def test_exhausted_retries_are_redriven_to_the_dead_letter_queue() -> None:
    async def scenario() -> None:
        client, store = MemoryQueueClient(), MemoryResultStore()
        await create_queue_with_dlq(client, max_receive_count=3)
        await enqueue(client, "fail", {}, "x1")
        settings = worker_settings({"fail": "worker_sample_tasks:always_fails"})

        async def in_dlq() -> bool:
            return (await queue_counts(client, "jobs-dlq"))[0] == 1

        runtime, _ = await run_until(settings, client, store, in_dlq)
        assert sample.calls["always"] == 3
        record = store.records["x1"]
        assert record.status == "dead"
        assert "failed 3 of 3 attempts: RuntimeError: always fails" in (record.error or "")
        assert await queue_counts(client) == (0, 0)
        assert runtime.stats.dead_lettered == 1
    asyncio.run(scenario())


@pytest.mark.parametrize(("body", "reason", "task_id"), [
    ("{not json", "undecodable body", "(message id)"),
    ('{"id": "p2", "payload": {}}', "missing 'task' field", "p2"),
    ('{"id": "p3", "task": "mystery", "payload": {}}', "unknown task 'mystery'", "p3"),
])
def test_poison_messages_go_to_the_dead_letter_queue_with_the_reason(
    body: str, reason: str, task_id: str
) -> None:
    async def scenario() -> None:
        from surge.queue.interface import OutgoingMessage

        client, store = MemoryQueueClient(), MemoryResultStore()
        await create_queue_with_dlq(client)
        sent = await client.send("jobs", OutgoingMessage(body))
        settings = worker_settings({"echo": "worker_sample_tasks:echo"})

        async def in_dlq() -> bool:
            return (await queue_counts(client, "jobs-dlq"))[0] == 1

        await run_until(settings, client, store, in_dlq)
        [dead] = await client.receive("jobs-dlq", 1)
        assert dead.body == body
        assert dead.message_attributes[DEAD_LETTER_REASON_ATTRIBUTE]["StringValue"].startswith(
            reason)
        assert await queue_counts(client) == (0, 0)
        record = store.records[sent.message_id if task_id == "(message id)" else task_id]
        assert record.status == "dead"
        assert (record.error or "").startswith(reason)
    asyncio.run(scenario())


def test_permanent_failure_goes_to_the_dead_letter_queue_at_once() -> None:
    async def scenario() -> None:
        client, store = MemoryQueueClient(), MemoryResultStore()
        await create_queue_with_dlq(client, max_receive_count=5)
        await enqueue(client, "perm", {}, "pf")
        settings = worker_settings({"perm": "worker_sample_tasks:permanent"})

        async def in_dlq() -> bool:
            return (await queue_counts(client, "jobs-dlq"))[0] == 1

        await run_until(settings, client, store, in_dlq)
        assert sample.calls["permanent"] == 1
        assert store.records["pf"].status == "dead"
        assert store.records["pf"].error == "permanent failure: cannot ever work"
    asyncio.run(scenario())


def test_dead_letter_queue_is_created_when_missing() -> None:
    async def scenario() -> None:
        client, store = MemoryQueueClient(), MemoryResultStore()
        await client.create_queue("jobs")
        await enqueue(client, "mystery", {}, "m1")
        settings = worker_settings({"echo": "worker_sample_tasks:echo"})

        async def in_dlq() -> bool:
            try:
                return (await queue_counts(client, "jobs-dlq"))[0] == 1
            except Exception:
                return False

        await run_until(settings, client, store, in_dlq)
    asyncio.run(scenario())


def test_duplicate_of_a_succeeded_task_is_acknowledged_without_running() -> None:
    async def scenario() -> None:
        client, store = MemoryQueueClient(), MemoryResultStore()
        await create_queue_with_dlq(client)
        await store.mark_succeeded("d1", "echo", 1, {"first": True})
        await enqueue(client, "echo", {"n": "dup"}, "d1")
        await enqueue(client, "echo", {"n": "new"}, "d2")
        settings = worker_settings({"echo": "worker_sample_tasks:echo"})
        runtime, _ = await run_until(settings, client, store, lambda: runtime_done(store, 2))
        await wait_until(lambda: runtime.stats.in_flight == 0)
        assert sample.calls["dup"] == 0
        assert sample.calls["new"] == 1
        assert store.records["d1"].result == {"first": True}
        assert runtime.stats.duplicates == 1
        assert await queue_counts(client) == (0, 0)
    asyncio.run(scenario())


def test_result_store_down_leaves_the_message_for_a_retry() -> None:
    async def scenario() -> None:
        client, store = MemoryQueueClient(), MemoryResultStore()
        await create_queue_with_dlq(client, max_receive_count=10)
        store.fail_writes = True
        await enqueue(client, "echo", {"n": "w"}, "w1")
        settings = worker_settings({"echo": "worker_sample_tasks:echo"})
        runtime = WorkerRuntime(settings, "jobs", client, store)
        running = asyncio.create_task(runtime.run())
        await wait_until(lambda: runtime.stats.received >= 2)
        assert (await queue_counts(client))[0] + (await queue_counts(client))[1] == 1
        store.fail_writes = False
        await wait_until(lambda: runtime_done(store, 1))
        runtime.stop()
        await running
        assert sample.calls["w"] == 1  # the start could not be recorded: not run until it was
    asyncio.run(scenario())


def test_heartbeat_keeps_a_long_task_invisible() -> None:
    async def scenario() -> None:
        client, store = MemoryQueueClient(), MemoryResultStore()
        await create_queue_with_dlq(client, visibility_timeout=1)
        await enqueue(client, "slow", {"seconds": 2.5, "id": "long"}, "h1")
        settings = worker_settings({"slow": "worker_sample_tasks:slow"}, concurrency=2)
        await run_until(settings, client, store, lambda: runtime_done(store, 1))
        assert sample.calls["long"] == 1
        assert store.statuses("h1") == ["running", "succeeded"]
        assert store.records["h1"].attempts == 1  # never redelivered while it ran
    asyncio.run(scenario())


def test_max_run_time_cancels_and_counts_as_failed() -> None:
    async def scenario() -> None:
        client, store = MemoryQueueClient(), MemoryResultStore()
        await create_queue_with_dlq(client, visibility_timeout=1, max_receive_count=2)
        await enqueue(client, "slow", {"seconds": 30, "id": "stuck"}, "t1")
        settings = worker_settings({"slow": "worker_sample_tasks:slow"}, max_run_time=0.5)
        await run_until(settings, client, store, lambda: runtime_done(store, 1, "dead"))
        assert store.statuses("t1") == ["running", "failed", "running", "dead"]
        assert "time limit of 0.5s exceeded" in (store.records["t1"].error or "")
        assert sample.calls["stuck"] == 0
        assert sample.running == 0  # cancelled, not left running
    asyncio.run(scenario())


def test_shutdown_finishes_short_tasks_and_hands_back_long_ones() -> None:
    async def scenario() -> None:
        client, store = MemoryQueueClient(), MemoryResultStore()
        await create_queue_with_dlq(client, visibility_timeout=60)
        await enqueue(client, "slow", {"seconds": 0.3, "id": "short"}, "short")
        await enqueue(client, "slow", {"seconds": 60, "id": "long"}, "long")
        settings = worker_settings({"slow": "worker_sample_tasks:slow"}, shutdown_timeout=1.0)
        runtime = WorkerRuntime(settings, "jobs", client, store)
        running = asyncio.create_task(runtime.run())
        await wait_until(lambda: sample.running == 2)
        loop = asyncio.get_running_loop()
        stop_at = loop.time()
        runtime.stop()
        report = await running
        assert loop.time() - stop_at < 3.0
        assert report == ShutdownReport(finished_in_grace=1, handed_back=1)
        assert store.records["short"].status == "succeeded"
        assert store.records["long"].status == "running"
        assert await queue_counts(client) == (1, 0)  # visible again at once, not after 60 s
        assert runtime.stats.handed_back == 1
    asyncio.run(scenario())


def test_stop_while_idle_returns_promptly() -> None:
    async def scenario() -> None:
        client, store = MemoryQueueClient(), MemoryResultStore()
        await create_queue_with_dlq(client)
        settings = worker_settings({"echo": "worker_sample_tasks:echo"}, wait_time=20)
        runtime = WorkerRuntime(settings, "jobs", client, store)
        running = asyncio.create_task(runtime.run())
        await asyncio.sleep(0.2)
        runtime.stop()
        report = await asyncio.wait_for(running, 2.0)
        assert report == ShutdownReport(0, 0)
    asyncio.run(scenario())
