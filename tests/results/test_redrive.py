"""A task redriven from the dead-letter queue runs again and its record follows (issue 12:
it stayed ``dead`` with the old error), with the real queue server, a worker, and each
result store (SQLite, and Redis on a redis-server started here)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from queue_client.servers import redis_server, surge_queue_server
from results import redrive_tasks
from surge.config.loader import validate_settings
from surge.envelope import encode_envelope
from surge.ids import random_uuid
from surge.queue.client.http import HttpQueueClient
from surge.queue.interface import OutgoingMessage
from surge.results.interface import ResultStore
from surge.results.redis_store import RedisResultStore
from surge.results.sqlite import SqliteResultStore
from surge.worker.runtime import WorkerRuntime

TESTS = Path(__file__).parent.parent
DLQ_ARN = "arn:aws:sqs:us-east-1:000000000000:jobs-dlq"


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultStore]:
    if request.param == "sqlite":
        yield SqliteResultStore(tmp_path / "results.db", 3600)
        return
    with redis_server(tmp_path) as url:
        yield RedisResultStore(url, 3600)


async def wait_for(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_a_redriven_task_runs_again_and_its_status_follows(store: ResultStore,
                                                             tmp_path: Path) -> None:
    """Both ways to the dead-letter queue: the queue's own redrive after maxReceiveCount
    (the same message), and the worker's copy on a permanent failure (a new message with
    the same body); back through StartMessageMoveTask."""
    redrive_tasks.calls.clear()
    with surge_queue_server(tmp_path / "queue") as endpoint:
        async def scenario() -> None:
            client = HttpQueueClient(endpoint)
            await client.create_queue("jobs-dlq")
            await client.create_queue("jobs", {"RedrivePolicy": orjson.dumps(
                {"deadLetterTargetArn": DLQ_ARN, "maxReceiveCount": 2}).decode()})
            for task, task_id in (("fails_twice", "left"), ("permanent_once", "copied")):
                await client.send("jobs", OutgoingMessage(
                    encode_envelope(task, task_id, task_id, time.time(), random_uuid())))
            settings = validate_settings({
                "config_dir": str(TESTS), "queues": {"jobs": {}},
                "workers": {"jobs": {
                    "queue": "jobs", "python_path": ["."], "wait_time": 0.2,
                    "backoff_base": 0, "backoff_max": 0, "handlers": {
                        "fails_twice": "results.redrive_tasks:fails_twice",
                        "permanent_once": "results.redrive_tasks:permanent_once"}}}})
            runtime = WorkerRuntime(settings, "jobs", client, store)
            running = asyncio.create_task(runtime.run())

            async def all_are(status: str) -> bool:
                records = [await store.get(task_id) for task_id in ("left", "copied")]
                return all(r is not None and r.status == status for r in records)

            async def both_in_the_dlq() -> bool:
                attributes = await client.get_attributes("jobs-dlq",
                                                         ["ApproximateNumberOfMessages"])
                return attributes["ApproximateNumberOfMessages"] == "2"

            try:
                await wait_for(lambda: all_are("dead"))
                await wait_for(both_in_the_dlq)
                sqs: Any = boto3.client(
                    "sqs", endpoint_url=endpoint, region_name="us-east-1",
                    aws_access_key_id="AKID", aws_secret_access_key="secret")
                await asyncio.to_thread(sqs.start_message_move_task, SourceArn=DLQ_ARN)
                await wait_for(lambda: all_are("succeeded"))
            finally:
                runtime.stop()
                await running
                await client.close()
            assert redrive_tasks.calls == {"left": 3, "copied": 2}
            for task_id in ("left", "copied"):
                record = await store.get(task_id)
                assert record is not None and record.error is None and record.attempts == 1
                assert [change.status for change in record.history][-3:] == [
                    "dead", "running", "succeeded"], record
            await store.close()

        asyncio.run(scenario())
