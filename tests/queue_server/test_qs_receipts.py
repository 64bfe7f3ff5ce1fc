"""Receipt handles cannot be forged or moved between queues, and outlive a restart."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from qs_support import ServerThread, make_client

from surge.errors import QueueError
from surge.queue.server.broker import Broker
from surge.queue.server.receipts import (
    KEY_FILE_NAME,
    ReceiptHandles,
    ReceiptKeyError,
    load_or_create_key,
)

START = 1_700_000_000_000
MESSAGE_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def test_handles_are_opaque_compact_and_checked() -> None:
    handles = ReceiptHandles.ephemeral()
    handle = handles.encode("q", 42, 3, MESSAGE_ID)
    assert re.fullmatch(r"[A-Za-z0-9_-]{60}", handle)
    assert MESSAGE_ID not in handle and "42" not in handle
    assert handles.decode("q", handle) == (42, 3, MESSAGE_ID)
    for forged in [
        f"42-3-{MESSAGE_ID}",  # the old, guessable format
        handle[:-1] + ("A" if handle[-1] != "A" else "B"),  # one character changed
        handle[:30],  # cut short
        handle + "AAAA",
        "",
        "ü" * 60,
    ]:
        with pytest.raises(QueueError) as caught:
            handles.decode("q", forged)
        assert caught.value.code == "ReceiptHandleIsInvalid"
    with pytest.raises(QueueError):
        handles.decode("other-queue", handle)  # a handle names its queue
    with pytest.raises(QueueError):
        ReceiptHandles.ephemeral().decode("q", handle)  # another server's key


def test_a_forged_handle_neither_deletes_nor_hides_a_message() -> None:
    broker = Broker()
    broker.create_queue("q", {}, {}, START)
    message = broker.send("q", "held by a consumer", START)
    [delivery] = broker.receive("q", START, 1, visibility_seconds=30)
    guessed = f"{message.seq}-{delivery.receipt_token}-{message.message_id}"
    for action in (lambda h: broker.delete("q", h, START),
                   lambda h: broker.change_visibility("q", h, 0, START)):
        with pytest.raises(QueueError) as caught:
            action(guessed)
        assert caught.value.code == "ReceiptHandleIsInvalid"
    assert broker.counts("q", START) == (0, 1, 0)  # still in flight, with its consumer
    broker.delete("q", broker.receipt_handle("q", delivery), START)
    assert broker.counts("q", START) == (0, 0, 0)


def test_forgery_over_the_wire(server: ServerThread, sqs: Any) -> None:
    """The issue's reproduction: a handle built by hand deleted another consumer's
    in-flight message."""
    url = sqs.create_queue(QueueName="victim")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="job")
    [message] = sqs.receive_message(QueueUrl=url, VisibilityTimeout=60)["Messages"]
    for forged in (f"1-1-{message['MessageId']}", message["ReceiptHandle"][:-2] + "xx"):
        with pytest.raises(ClientError) as excinfo:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=forged)
        assert excinfo.value.response["Error"]["Code"] == "ReceiptHandleIsInvalid"
    other = sqs.create_queue(QueueName="other")["QueueUrl"]
    with pytest.raises(ClientError) as excinfo:
        sqs.delete_message(QueueUrl=other, ReceiptHandle=message["ReceiptHandle"])
    assert excinfo.value.response["Error"]["Code"] == "ReceiptHandleIsInvalid"
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_the_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    path = tmp_path / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path) == key and len(key) == 32
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE_NAME]  # no temporary left
    os.chmod(path, 0o644)
    with pytest.raises(ReceiptKeyError, match=r"open to other users.*chmod 600"):
        load_or_create_key(tmp_path)
    os.chmod(path, 0o600)
    path.write_text("short\n")
    with pytest.raises(ReceiptKeyError, match="not 64 hex digits"):
        load_or_create_key(tmp_path)


def test_handles_survive_a_restart_and_a_new_key_voids_them(tmp_path: Path) -> None:
    server = ServerThread(tmp_path).start()
    sqs = make_client(server.endpoint)
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    for body in ("a", "b"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    first, second = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2,
                                        VisibilityTimeout=60)["Messages"]
    server.stop()
    server = ServerThread(tmp_path).start()
    try:
        sqs = make_client(server.endpoint)
        sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        assert attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"
    finally:
        server.stop()
    (tmp_path / KEY_FILE_NAME).unlink()
    server = ServerThread(tmp_path).start()
    try:
        sqs = make_client(server.endpoint)
        with pytest.raises(ClientError) as excinfo:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"])
        assert excinfo.value.response["Error"]["Code"] == "ReceiptHandleIsInvalid"
    finally:
        server.stop()
