"""Durability under kill -9: the server as a subprocess under concurrent send/receive/delete
load is SIGKILLed, restarted on the same database, and drained.

Checks: every acknowledged send is receivable unless a delete of it was attempted; no message
whose delete was acknowledged comes back; messages in flight at the kill reappear only after
their visibility deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from qs_support import make_client

VISIBILITY = 4


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``surge queue serve`` on a free port; the address comes from its JSON log."""
    log_path = data_dir / f"server-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-c", "from surge.cli import main; main()", "queue", "serve",
             "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
            stderr=log_file,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        for line in log_path.read_text().splitlines():
            event = json.loads(line)
            if event["message"] == "listening":
                return process, f"http://{event['address']}"
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise AssertionError(f"the queue server did not start: {log_path.read_text()}")


class Load:
    def __init__(self, endpoint: str, url: str) -> None:
        self.endpoint, self.url = endpoint, url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked_sends: set[str] = set()
        self.delete_attempted: set[str] = set()
        self.acked_deletes: set[str] = set()
        self.in_flight_deadline: dict[str, float] = {}  # body → wall time it may reappear
        self.counter = 0

    def sender(self, name: str, url: str | None = None) -> None:
        client = make_client(self.endpoint)
        url = url or self.url
        while not self.stop.is_set():
            with self.lock:
                start, self.counter = self.counter, self.counter + 10
            bodies = [f"{name}-{start + i}" for i in range(10)]
            try:
                result = client.send_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)])
            except (BotoCoreError, ClientError):
                return
            with self.lock:
                self.acked_sends.update(bodies[int(e["Id"])] for e in result["Successful"])

    def receiver(self, delete_every: int) -> None:
        client = make_client(self.endpoint)
        seen = 0
        while not self.stop.is_set():
            try:
                received_at = time.time()
                messages = client.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10,
                                                  VisibilityTimeout=VISIBILITY).get("Messages", [])
            except (BotoCoreError, ClientError):
                return
            to_delete = []
            for message in messages:
                seen += 1
                if seen % delete_every:
                    to_delete.append(message)
                else:  # keep it in flight: it must come back after its deadline
                    with self.lock:
                        self.in_flight_deadline[message["Body"]] = received_at + VISIBILITY
            if not to_delete:
                continue
            with self.lock:
                self.delete_attempted.update(m["Body"] for m in to_delete)
            try:
                result = client.delete_message_batch(QueueUrl=self.url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(to_delete)])
            except (BotoCoreError, ClientError):
                return
            with self.lock:
                self.acked_deletes.update(to_delete[int(e["Id"])]["Body"]
                                          for e in result["Successful"])


def test_kill9_loses_no_acknowledged_work(tmp_path: Path) -> None:
    process, endpoint = start_server(tmp_path)
    try:
        client = make_client(endpoint)
        url = client.create_queue(QueueName="durable")["QueueUrl"]
        # Nobody receives from "side": every acknowledged send to it must survive the kill.
        side_url = client.create_queue(QueueName="side")["QueueUrl"]
        load = Load(endpoint, url)
        threads = [threading.Thread(target=load.sender, args=(f"s{i}",)) for i in range(3)]
        threads += [threading.Thread(target=load.sender, args=(f"side{i}", side_url))
                    for i in range(2)]
        threads += [threading.Thread(target=load.receiver, args=(5,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(3.0)
        os.kill(process.pid, signal.SIGKILL)
        killed_at = time.time()
        process.wait(10)
        load.stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        if process.poll() is None:
            process.kill()
    assert len(load.acked_sends) > 200, "the load did not get going"
    assert load.acked_deletes, "no deletes happened before the kill"

    process, endpoint = start_server(tmp_path)
    try:
        client = make_client(endpoint)
        side_url = client.get_queue_url(QueueName="side")["QueueUrl"]
        side_count = int(client.get_queue_attributes(
            QueueUrl=side_url, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"]["ApproximateNumberOfMessages"])
        url = client.get_queue_url(QueueName="durable")["QueueUrl"]
        drained: dict[str, float] = {}
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < VISIBILITY + 2:
            messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                              WaitTimeSeconds=1,
                                              VisibilityTimeout=60).get("Messages", [])
            now = time.time()
            for message in messages:
                assert message["Body"] not in drained, "a message came back twice"
                drained[message["Body"]] = now
            if messages:
                quiet_since = time.monotonic()
    finally:
        process.terminate()
        assert process.wait(20) == 0, "SIGTERM must stop the server cleanly"

    side_acked = {body for body in load.acked_sends if body.startswith("side")}
    assert side_count >= len(side_acked), "acknowledged sends to the side queue were lost"
    resurrected = load.acked_deletes & set(drained)
    assert not resurrected, f"acknowledged deletes came back: {sorted(resurrected)[:5]}"
    lost = load.acked_sends - side_acked - set(drained) - load.delete_attempted
    assert not lost, f"acknowledged sends were lost: {sorted(lost)[:5]}"
    early = {body: drained[body] - deadline for body, deadline in load.in_flight_deadline.items()
             if body in drained and drained[body] < deadline - 0.5 and deadline > killed_at}
    assert not early, f"in-flight messages came back before their deadline: {early}"
    returned = [body for body in load.in_flight_deadline if body in drained]
    assert returned, "messages in flight at the kill should have come back"


def test_sigterm_ends_long_polls_and_exits_cleanly(tmp_path: Path) -> None:
    process, endpoint = start_server(tmp_path)
    try:
        client = make_client(endpoint)
        url = client.create_queue(QueueName="idle")["QueueUrl"]
        result: dict[str, Any] = {}

        def poll() -> None:
            result["response"] = client.receive_message(QueueUrl=url, WaitTimeSeconds=20)

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.5)
        started = time.monotonic()
        process.terminate()
        assert process.wait(10) == 0
        poller.join(10)
        assert time.monotonic() - started < 5
        assert result["response"].get("Messages", []) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
