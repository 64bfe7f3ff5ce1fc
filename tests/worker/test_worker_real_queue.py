"""The worker against the real embedded queue server (``surge queue serve`` subprocess on a
free port) and the real SQLite result store, in one process: every settle path over the
wire."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import worker_sample_tasks as sample
from worker_fakes import create_queue_with_dlq, enqueue, enqueue_many, make_settings, wait_until
from worker_servers import queue_server

from surge.queue.client.http import HttpQueueClient
from surge.queue.interface import OutgoingMessage
from surge.results.sqlite import SqliteResultStore
from surge.worker.consumer import DEAD_LETTER_REASON_ATTRIBUTE
from surge.worker.runtime import WorkerRuntime

HERE = str(Path(__file__).parent)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with queue_server(tmp_path / "queue") as address:
        yield address


@pytest.fixture(autouse=True)
def _reset() -> None:
    sample.reset()


async def counts(client: HttpQueueClient, queue: str) -> tuple[int, int]:
    attributes = await client.get_attributes(
        queue, ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    return (int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]))


def test_every_settle_path_over_the_wire(server: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        client = HttpQueueClient(f"http://{server}")
        store = SqliteResultStore(tmp_path / "results.db", 3600)
        await create_queue_with_dlq(client, max_receive_count=2)
        await enqueue_many(client, [("echo", {"n": i}, f"ok{i}") for i in range(300)])
        await enqueue(client, "flaky", {"key": "fl", "fail_times": 1}, "flaky")
        await enqueue(client, "fail", {}, "exhausted")
        await enqueue(client, "perm", {}, "permanent")
        await enqueue(client, "nope", {}, "unknown")
        await client.send("jobs", OutgoingMessage("<xml>not json</xml>"))
        settings = make_settings({
            "handlers": {"echo": "worker_sample_tasks:echo",
                         "flaky": "worker_sample_tasks:flaky",
                         "fail": "worker_sample_tasks:always_fails",
                         "perm": "worker_sample_tasks:permanent"},
            "python_path": ["."], "wait_time": 0.5, "concurrency": 16,
            "backoff_base": 0, "backoff_max": 0}, config_dir=HERE)
        worker_client = HttpQueueClient(f"http://{server}")
        runtime = WorkerRuntime(settings, "jobs", worker_client, store)
        running = asyncio.create_task(runtime.run())

        async def settled() -> bool:
            return await counts(client, "jobs") == (0, 0) and \
                (await counts(client, "jobs-dlq"))[0] == 4

        try:
            await wait_until(settled, 30)
        finally:
            runtime.stop()
            await running
        assert runtime.stats.processed == 301
        for i in (0, 150, 299):
            record = await store.get(f"ok{i}")
            assert record is not None
            assert (record.status, record.result) == ("succeeded", {"echo": {"n": i}})
        flaky = await store.get("flaky")
        assert flaky is not None and (flaky.status, flaky.attempts) == ("succeeded", 2)
        for task_id, error in [("exhausted", "failed 2 of 2 attempts"),
                               ("permanent", "permanent failure: cannot ever work"),
                               ("unknown", "unknown task 'nope'")]:
            record = await store.get(task_id)
            assert record is not None and record.status == "dead", task_id
            assert error in (record.error or ""), record
        reasons = []
        for _ in range(4):
            for message in await client.receive("jobs-dlq", 10, visibility_timeout=60):
                reasons.append(message.message_attributes.get(
                    DEAD_LETTER_REASON_ATTRIBUTE, {}).get("StringValue", "(redriven)"))
        assert sorted(reason.split(":")[0] for reason in reasons) == [
            "(redriven)", "permanent failure", "undecodable body", "unknown task 'nope'"]
        await store.close()
        await client.close()
        await worker_client.close()
    asyncio.run(scenario())


def test_heartbeat_and_hand_back_over_the_wire(server: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        client = HttpQueueClient(f"http://{server}")
        store = SqliteResultStore(tmp_path / "results.db", 3600)
        await create_queue_with_dlq(client, visibility_timeout=1)
        await enqueue(client, "slow", {"seconds": 2.5, "id": "long"}, "long")
        await enqueue(client, "slow", {"seconds": 60, "id": "forever"}, "forever")
        settings: Any = make_settings({
            "handlers": {"slow": "worker_sample_tasks:slow"}, "python_path": ["."],
            "wait_time": 0.5, "shutdown_timeout": 3}, config_dir=HERE)
        worker_client = HttpQueueClient(f"http://{server}")
        runtime = WorkerRuntime(settings, "jobs", worker_client, store)
        running = asyncio.create_task(runtime.run())

        async def long_done() -> bool:
            record = await store.get("long")
            return record is not None and record.status == "succeeded"

        await wait_until(long_done, 15)
        assert sample.calls["long"] == 1
        record = await store.get("long")
        assert record is not None and record.attempts == 1  # heartbeat kept it ours


        async def only_forever_in_flight() -> bool:
            # The result is recorded before the message is deleted (batched, just after).
            return await counts(client, "jobs") == (0, 1)

        await wait_until(only_forever_in_flight, 5)  # "forever" still held by heartbeat
        runtime.stop()
        report = await running
        assert report.handed_back == 1
        assert await counts(client, "jobs") == (1, 0)
        await store.close()
        await client.close()
        await worker_client.close()
    asyncio.run(scenario())
