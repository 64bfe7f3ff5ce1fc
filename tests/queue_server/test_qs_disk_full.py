"""A full disk: sends are refused with a 503 that clients retry, receives, deletes and
visibility changes go on, nothing acknowledged is lost or resurrected, and the server
never exits for it. First with the disk's failures injected, then on a real full file
system (a small tmpfs, mounted when the tests run as root)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from qs_support import make_client

from surge.errors import QueueError
from surge.queue.server.broker import Broker
from surge.queue.server.service import CallContext, QueueService
from surge.queue.server.store import RESERVE_NAME, SqliteStore, Statement, StoreFull

sys.path.insert(0, str(Path(__file__).parents[1] / "queue_client"))
from servers import free_port, stop, wait_until_listening

CONTEXT = CallContext("http://127.0.0.1:1", "AKID")


class FillingDisk(SqliteStore):
    """A store whose disk runs full on demand: ``room`` commits succeed, then every commit
    fails as SQLite fails on a full disk, until the test frees space."""

    room: int | None = None  # None: unlimited

    def _commit(self, statements: list[Statement]) -> None:
        if self.room is not None:
            if self.room <= 0:
                raise sqlite3.OperationalError("database or disk is full")
            self.room -= 1
        super()._commit(statements)


async def call(service: QueueService, action: str, **params: Any) -> dict[str, Any]:
    return await service.call(action, {"QueueUrl": "q", **params}, CONTEXT)


def test_the_reserve_takes_the_batch_that_hit_the_wall_then_sends_are_refused(
        tmp_path: Path) -> None:
    async def main() -> None:
        store = FillingDisk(tmp_path / "queue.db", reserve_bytes=64 * 1024)
        assert (tmp_path / RESERVE_NAME).stat().st_size == 64 * 1024
        service = QueueService(Broker(store), store)
        store.start()
        await service.call("CreateQueue", {"QueueName": "q"}, CONTEXT)
        await call(service, "SendMessage", MessageBody="before")

        # The disk fills: the failing commit releases the reserve and goes through in it.
        original_commit = FillingDisk._commit
        failures = iter([True])

        def full_once(self: FillingDisk, statements: list[Statement]) -> None:
            if next(failures, False):
                raise sqlite3.OperationalError("database or disk is full")
            original_commit(self, statements)

        store._commit = full_once.__get__(store)  # type: ignore[method-assign]
        sent = await call(service, "SendMessage", MessageBody="in the reserve")
        assert sent["MessageId"]
        assert store.disk_full and not (tmp_path / RESERVE_NAME).exists()
        with pytest.raises(QueueError) as caught:
            await call(service, "SendMessage", MessageBody="refused")
        assert (caught.value.code, caught.value.sender_fault) == ("ServiceUnavailable", False)
        with pytest.raises(QueueError):
            await call(service, "SendMessageBatch", Entries=[{"Id": "a", "MessageBody": "x"}])
        with pytest.raises(QueueError):
            await service.call("CreateQueue", {"QueueName": "new"}, CONTEXT)
        await service.call("CreateQueue", {"QueueName": "q"}, CONTEXT)  # exists: fine

        received = (await call(service, "ReceiveMessage", MaxNumberOfMessages=10))["Messages"]
        assert sorted(m["Body"] for m in received) == ["before", "in the reserve"]
        await call(service, "ChangeMessageVisibility",
                   ReceiptHandle=received[0]["ReceiptHandle"], VisibilityTimeout=60)
        await call(service, "DeleteMessage", ReceiptHandle=received[1]["ReceiptHandle"])
        await store.close()

    asyncio.run(main())


def test_no_room_at_all_keeps_changes_unacknowledged_until_there_is(tmp_path: Path,
                                                                    monkeypatch: Any) -> None:
    monkeypatch.setattr("surge.queue.server.store.DISK_CHECK_INTERVAL", 0.05)
    database = tmp_path / "queue.db"

    async def main() -> None:
        store = FillingDisk(database, reserve_bytes=0)
        service = QueueService(Broker(store), store)
        store.start()
        await service.call("CreateQueue", {"QueueName": "q"}, CONTEXT)
        for body in ("keep", "delete me"):
            await call(service, "SendMessage", MessageBody=body)
        messages = (await call(service, "ReceiveMessage", MaxNumberOfMessages=10,
                               VisibilityTimeout=60))["Messages"]
        doomed = next(m for m in messages if m["Body"] == "delete me")

        store.room = 0  # not a byte, and no reserve
        with pytest.raises(StoreFull):
            await call(service, "SendMessage", MessageBody="not acknowledged")
        assert store.disk_full
        with pytest.raises(StoreFull):
            await call(service, "DeleteMessage", ReceiptHandle=doomed["ReceiptHandle"])
        # Repeated (as a client does after a 503): already gone in memory, but not on disk,
        # so it is still not acknowledged.
        with pytest.raises(StoreFull):
            await call(service, "DeleteMessage", ReceiptHandle=doomed["ReceiptHandle"])
        with pytest.raises(StoreFull):  # a receive that cannot be recorded hands back
            await call(service, "ReceiveMessage", VisibilityTimeout=60)
        assert not store._writer.done(), "a full disk must not stop the writer"  # type: ignore[union-attr]

        store.room = None  # space freed: the carried changes commit, the retry is acked
        await call(service, "DeleteMessage", ReceiptHandle=doomed["ReceiptHandle"])
        for _ in range(100):
            if not store.disk_full:
                break
            await asyncio.sleep(0.05)
        assert not store.disk_full
        await call(service, "SendMessage", MessageBody="after")
        await store.close()

    asyncio.run(main())
    reopened = SqliteStore(database, reserve_bytes=0)
    broker = Broker(reopened)
    reopened.restore(broker, 0)
    bodies = sorted(m.body for m in broker.queues["q"].messages.values())
    # "delete me" stays deleted; the send answered StoreFull was committed later (at least
    # once: it was never acknowledged, and it is not lost either).
    assert bodies == ["after", "keep", "not acknowledged"]
    asyncio.run(reopened.close())


# -- a real full file system -------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path) -> None:
    """Take every free byte of the file system ``path`` is on."""
    with open(path, "wb", buffering=0) as filler:
        for size in (65536, 512, 1):
            with contextlib.suppress(OSError):
                while filler.write(b"\0" * size):
                    pass


def ping(endpoint: str) -> dict[str, Any]:
    with urllib.request.urlopen(endpoint + "/_surge/ping", timeout=5) as response:
        document: dict[str, Any] = json.loads(response.read())
        return document


def start_server(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    config = log.parent / "surge.toml"
    config.write_text('[queue_backend]\ndisk_reserve = "2m"\n')
    with open(log, "ab") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", "from surge.cli import main; main()", "queue", "serve",
             "-c", str(config), "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)],
            stderr=stderr)
    wait_until_listening(port, process, "surge queue serve")
    return process


def test_a_real_full_disk(small_disk: Path, tmp_path: Path) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    data_dir = small_disk / "data"
    log = tmp_path / "server.log"
    server = start_server(data_dir, port, log)
    try:
        sqs = make_client(endpoint)
        url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
        acknowledged = []
        for number in range(50):
            sqs.send_message(QueueUrl=url, MessageBody=f"job {number} " + "x" * 1000)
            acknowledged.append(number)
        assert ping(endpoint) == {"status": "ok", "disk_full": False}

        fill(small_disk / "filler")
        refused = 0
        for number in range(50, 5000):  # until the database needs room it has not got
            try:
                sqs.send_message(QueueUrl=url, MessageBody=f"job {number} " + "x" * 1000)
                acknowledged.append(number)
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "ServiceUnavailable"
                assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 503
                refused += 1
                if refused == 3:
                    break
        assert refused == 3
        assert ping(endpoint)["disk_full"] is True

        # Receives, visibility changes and deletes go on; the process does not exit.
        taken = []
        for _ in range(3):
            batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                        VisibilityTimeout=60).get("Messages", [])
            sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 120}
                for i, m in enumerate(batch)]) if batch else None
            result = sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(batch)]) if batch else {"Successful": []}
            assert not result.get("Failed")
            taken += [m["Body"] for m in batch]
        assert len(taken) == 30 < len(acknowledged)
        assert server.poll() is None, "the queue server exited on a full disk"
        assert b"the disk is full" in log.read_bytes()

        # Stopped and started again on the full disk: it comes back (its WAL, checkpointed
        # and removed at the stop, may have left it room enough for its reserve).
        stop(server)
        server = start_server(data_dir, port, log)
        assert ping(endpoint)["status"] == "ok"
        assert sqs.receive_message(QueueUrl=url, VisibilityTimeout=0).get("Messages")

        (small_disk / "filler").unlink()
        deadline = time.monotonic() + 10
        while ping(endpoint)["disk_full"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ping(endpoint)["disk_full"] is False
        sqs.send_message(QueueUrl=url, MessageBody="after the disk had room again")
        left = []
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get(
                "Messages", []):
            left += [m["Body"] for m in batch]
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(batch)])
        # Every acknowledged message came out exactly once; no deleted one came back.
        seen = sorted(int(body.split()[1]) for body in taken + left
                      if body.startswith("job "))
        assert seen == sorted(set(seen))
        assert set(acknowledged) <= set(seen)
        assert "after the disk had room again" in left
    finally:
        stop(server)


def test_a_refused_send_reads_as_not_stored_over_http(tmp_path: Path) -> None:
    """boto3 sees 503 ServiceUnavailable (and retries it); surge's http backend sees a
    rejection (QueueError: nothing stored), so the enqueue route answers 503, not 504."""
    from qs_support import ServerThread

    from surge.queue.client.http import HttpQueueClient
    from surge.queue.interface import OutgoingMessage

    server = ServerThread(tmp_path).start()
    try:
        sqs = make_client(server.endpoint)
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        server.running.store.disk_full = True
        with pytest.raises(ClientError) as excinfo:
            sqs.send_message(QueueUrl=url, MessageBody="m")
        assert excinfo.value.response["Error"]["Code"] == "ServiceUnavailable"
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503

        async def send() -> None:
            client = HttpQueueClient(server.endpoint)
            try:
                with pytest.raises(QueueError) as caught:
                    await client.send("q", OutgoingMessage("m"))
                assert (caught.value.code, caught.value.sender_fault) == (
                    "ServiceUnavailable", False)
            finally:
                await client.close()
        asyncio.run(send())
        assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
            "Attributes"]["ApproximateNumberOfMessages"] == "0"
    finally:
        server.stop()
