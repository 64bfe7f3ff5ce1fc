"""Every SQS action and error through boto3 (AWS JSON 1.0) against a real server on a free port."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from qs_support import ServerThread, make_client


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def new_queue(sqs: Any, name: str = "q", **attributes: str) -> str:
    return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def receive(sqs: Any, url: str, **kwargs: Any) -> list[dict[str, Any]]:
    return list(sqs.receive_message(QueueUrl=url, **kwargs).get("Messages", []))


# -- queues ---------------------------------------------------------------------------------------

def test_create_queue_is_idempotent_for_equal_attributes(sqs: Any, server: ServerThread) -> None:
    url = new_queue(sqs, "jobs", VisibilityTimeout="60")
    assert url == f"{server.endpoint}/000000000000/jobs"
    assert new_queue(sqs, "jobs", VisibilityTimeout="60") == url
    with pytest.raises(ClientError) as excinfo:
        new_queue(sqs, "jobs", VisibilityTimeout="10")
    assert error_code(excinfo) == "QueueAlreadyExists"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_create_queue_rejects_bad_names_and_attributes(sqs: Any) -> None:
    for name, attributes, code in [
        ("bad name", {}, "InvalidParameterValue"),
        ("x" * 81, {}, "InvalidParameterValue"),
        ("q", {"VisibilityTimeout": "43201"}, "InvalidAttributeValue"),
        ("q", {"MaximumMessageSize": "1023"}, "InvalidAttributeValue"),
        ("q", {"MessageRetentionPeriod": "59"}, "InvalidAttributeValue"),
        ("q", {"Bogus": "1"}, "InvalidAttributeName"),
        ("q", {"FifoQueue": "true"}, "InvalidParameterValue"),
        ("q", {"ContentBasedDeduplication": "true"}, "InvalidAttributeName"),
    ]:
        with pytest.raises(ClientError) as excinfo:
            sqs.create_queue(QueueName=name, Attributes=attributes)
        assert error_code(excinfo) == code, (name, attributes)


def test_get_queue_url_and_missing_queue(sqs: Any) -> None:
    url = new_queue(sqs, "here")
    assert sqs.get_queue_url(QueueName="here")["QueueUrl"] == url
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as excinfo:
        sqs.get_queue_url(QueueName="gone")
    assert error_code(excinfo) == "AWS.SimpleQueueService.NonExistentQueue"
    with pytest.raises(ClientError) as excinfo:
        sqs.send_message(QueueUrl=url + "x", MessageBody="m")
    assert error_code(excinfo) == "AWS.SimpleQueueService.NonExistentQueue"


def test_list_queues_with_prefix_and_pages(sqs: Any) -> None:
    for name in ("a1", "a2", "a3", "b1"):
        new_queue(sqs, name)
    names = [u.rsplit("/", 1)[1] for u in sqs.list_queues()["QueueUrls"]]
    assert names == ["a1", "a2", "a3", "b1"]
    page = sqs.list_queues(QueueNamePrefix="a", MaxResults=2)
    assert [u.rsplit("/", 1)[1] for u in page["QueueUrls"]] == ["a1", "a2"]
    rest = sqs.list_queues(QueueNamePrefix="a", MaxResults=2, NextToken=page["NextToken"])
    assert [u.rsplit("/", 1)[1] for u in rest["QueueUrls"]] == ["a3"]
    assert "NextToken" not in rest


def test_delete_queue(sqs: Any) -> None:
    url = new_queue(sqs, "doomed")
    sqs.send_message(QueueUrl=url, MessageBody="m")
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName="doomed")


def test_queue_attributes(sqs: Any) -> None:
    url = new_queue(sqs, "attrs")
    sqs.send_message(QueueUrl=url, MessageBody="visible")
    sqs.send_message(QueueUrl=url, MessageBody="delayed", DelaySeconds=60)
    sqs.send_message(QueueUrl=url, MessageBody="flying")
    receive(sqs, url)
    values = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert values["ApproximateNumberOfMessages"] == "1"
    assert values["ApproximateNumberOfMessagesNotVisible"] == "1"
    assert values["ApproximateNumberOfMessagesDelayed"] == "1"
    assert values["QueueArn"] == "arn:aws:sqs:us-east-1:000000000000:attrs"
    assert values["VisibilityTimeout"] == "30" and values["MessageRetentionPeriod"] == "345600"
    assert int(values["CreatedTimestamp"]) <= time.time()
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "5"})
    only = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    assert only["Attributes"] == {"VisibilityTimeout": "5"}
    with pytest.raises(ClientError) as excinfo:
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Nope"])
    assert error_code(excinfo) == "InvalidAttributeName"
    with pytest.raises(ClientError) as excinfo:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "901"})
    assert error_code(excinfo) == "InvalidAttributeValue"


def test_purge_queue(sqs: Any) -> None:
    url = new_queue(sqs, "purged")
    for index in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{index}")
    sqs.purge_queue(QueueUrl=url)
    assert receive(sqs, url, MaxNumberOfMessages=10) == []
    with pytest.raises(ClientError) as excinfo:
        sqs.purge_queue(QueueUrl=url)
    assert error_code(excinfo) == "AWS.SimpleQueueService.PurgeQueueInProgress"
    sqs.send_message(QueueUrl=url, MessageBody="after")
    assert [m["Body"] for m in receive(sqs, url)] == ["after"]


def test_tags(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="tagged", tags={"team": "a"})["QueueUrl"]
    sqs.tag_queue(QueueUrl=url, Tags={"env": "test", "team": "b"})
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "b", "env": "test"}
    sqs.untag_queue(QueueUrl=url, TagKeys=["team"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "test"}


def test_unsupported_operation(sqs: Any) -> None:
    url = new_queue(sqs)
    with pytest.raises(ClientError) as excinfo:
        sqs.add_permission(QueueUrl=url, Label="l", AWSAccountIds=["1"], Actions=["SendMessage"])
    assert error_code(excinfo) == "AWS.SimpleQueueService.UnsupportedOperation"


# -- messages -------------------------------------------------------------------------------------

def test_send_receive_delete_with_attributes(sqs: Any) -> None:
    url = new_queue(sqs)
    attributes = {
        "s": {"DataType": "String", "StringValue": "text"},
        "n": {"DataType": "Number.int", "StringValue": "42"},
        "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
    }
    sent = sqs.send_message(
        QueueUrl=url, MessageBody="héllo", MessageAttributes=attributes,
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String",
                                                    "StringValue": "Root=1-abc"}},
    )
    assert sent["MD5OfMessageSystemAttributes"]
    [message] = receive(sqs, url, MessageAttributeNames=["All"],
                        MessageSystemAttributeNames=["All"])
    assert message["Body"] == "héllo" and message["MessageId"] == sent["MessageId"]
    assert message["MessageAttributes"]["b"]["BinaryValue"] == b"\x00\x01"
    assert message["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    system = message["Attributes"]
    assert system["ApproximateReceiveCount"] == "1"
    assert system["SenderId"] == "AKIDEXAMPLE" and system["AWSTraceHeader"] == "Root=1-abc"
    assert {"SentTimestamp", "ApproximateFirstReceiveTimestamp"} <= set(system)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert receive(sqs, url) == []


def test_message_attribute_filtering(sqs: Any) -> None:
    url = new_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="m", MessageAttributes={
        "app.a": {"DataType": "String", "StringValue": "1"},
        "other": {"DataType": "String", "StringValue": "2"},
    })
    [message] = receive(sqs, url, MessageAttributeNames=["app.*"])
    assert set(message["MessageAttributes"]) == {"app.a"}


def test_new_receipt_handle_every_receive(sqs: Any) -> None:
    url = new_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="m")
    [first] = receive(sqs, url, VisibilityTimeout=0)
    [second] = receive(sqs, url, VisibilityTimeout=0, AttributeNames=["All"])
    assert first["ReceiptHandle"] != second["ReceiptHandle"]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"])
    assert receive(sqs, url) == []


def test_message_validation_errors(sqs: Any) -> None:
    url = new_queue(sqs, "small", MaximumMessageSize="1024")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"MessageBody": "x" * 1025}, "InvalidParameterValue"),
        ({"MessageBody": "bad \x00 char"}, "InvalidMessageContents"),
        ({"MessageBody": "m", "DelaySeconds": 901}, "InvalidParameterValue"),
        ({"MessageBody": "m", "MessageAttributes": {
            f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(11)}},
         "InvalidParameterValue"),
        ({"MessageBody": "m", "MessageAttributes": {
            "a": {"DataType": "Float", "StringValue": "v"}}}, "InvalidParameterValue"),
        ({"MessageBody": "m", "MessageDeduplicationId": "d"}, "InvalidParameterValue"),
    ]
    for kwargs, code in cases:
        with pytest.raises(ClientError) as excinfo:
            sqs.send_message(QueueUrl=url, **kwargs)
        assert error_code(excinfo) == code, kwargs
    sqs.send_message(QueueUrl=url, MessageBody="x" * 1024)


def test_receive_parameter_limits(sqs: Any) -> None:
    url = new_queue(sqs)
    for kwargs in ({"MaxNumberOfMessages": 11}, {"MaxNumberOfMessages": 0},
                   {"WaitTimeSeconds": 21}, {"VisibilityTimeout": 43201}):
        with pytest.raises(ClientError) as excinfo:
            sqs.receive_message(QueueUrl=url, **kwargs)
        assert error_code(excinfo) == "InvalidParameterValue", kwargs


def test_missing_parameter_over_raw_json(server: ServerThread, sqs: Any) -> None:
    url = new_queue(sqs)
    request = urllib.request.Request(
        server.endpoint + "/", data=json.dumps({"QueueUrl": url}).encode(), method="POST",
        headers={"X-Amz-Target": "AmazonSQS.SendMessage",
                 "Content-Type": "application/x-amz-json-1.0"},
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=5)
    assert excinfo.value.code == 400
    assert excinfo.value.headers["x-amzn-query-error"] == "MissingParameter;Sender"
    assert json.loads(excinfo.value.read())["__type"].endswith("#MissingParameter")


def test_send_batch_and_delete_batch(sqs: Any) -> None:
    url = new_queue(sqs)
    result = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "ok1", "MessageBody": "one"},
        {"Id": "bad", "MessageBody": "\x01"},
        {"Id": "ok2", "MessageBody": "two", "DelaySeconds": 0},
    ])
    assert [e["Id"] for e in result["Successful"]] == ["ok1", "ok2"]
    assert result["Failed"] == [{"Id": "bad", "Code": "InvalidMessageContents",
                                 "Message": result["Failed"][0]["Message"],
                                 "SenderFault": True}]
    messages = receive(sqs, url, MaxNumberOfMessages=10)
    assert sorted(m["Body"] for m in messages) == ["one", "two"]
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
    ] + [{"Id": "junk", "ReceiptHandle": "not-a-handle"}])
    assert len(deleted["Successful"]) == 2
    assert deleted["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"


def test_batch_request_errors(sqs: Any) -> None:
    url = new_queue(sqs)
    cases: list[tuple[list[dict[str, Any]], str]] = [
        ([], "AWS.SimpleQueueService.EmptyBatchRequest"),
        ([{"Id": str(i), "MessageBody": "m"} for i in range(11)],
         "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"),
        ([{"Id": "same", "MessageBody": "m"}] * 2,
         "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"),
        ([{"Id": "bad id!", "MessageBody": "m"}], "AWS.SimpleQueueService.InvalidBatchEntryId"),
        ([{"Id": "i" * 81, "MessageBody": "m"}], "AWS.SimpleQueueService.InvalidBatchEntryId"),
        ([{"Id": str(i), "MessageBody": "x" * 200_000} for i in range(6)],
         "AWS.SimpleQueueService.BatchRequestTooLong"),
    ]
    for entries, code in cases:
        with pytest.raises(ClientError) as excinfo:
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert error_code(excinfo) == code
    with pytest.raises(ClientError) as excinfo:
        sqs.delete_message_batch(QueueUrl=url, Entries=[])
    assert error_code(excinfo) == "AWS.SimpleQueueService.EmptyBatchRequest"


def test_change_visibility(sqs: Any) -> None:
    url = new_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="m")
    [message] = receive(sqs, url)
    assert receive(sqs, url) == []
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"],
                                  VisibilityTimeout=0)
    [again] = receive(sqs, url, VisibilityTimeout=0)
    with pytest.raises(ClientError) as excinfo:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"],
                                      VisibilityTimeout=10)
    assert error_code(excinfo) == "AWS.SimpleQueueService.MessageNotInflight"
    with pytest.raises(ClientError) as excinfo:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle="garbage",
                                      VisibilityTimeout=10)
    assert error_code(excinfo) == "ReceiptHandleIsInvalid"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    [third] = receive(sqs, url)
    result = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "a", "ReceiptHandle": third["ReceiptHandle"], "VisibilityTimeout": 0},
        {"Id": "b", "ReceiptHandle": again["ReceiptHandle"], "VisibilityTimeout": 0},
    ])
    assert [e["Id"] for e in result["Successful"]] == ["a"]
    assert result["Failed"][0]["Code"] == "MessageNotInflight"
    assert len(receive(sqs, url)) == 1


def test_visibility_timeout_expires(sqs: Any) -> None:
    url = new_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="m")
    receive(sqs, url, VisibilityTimeout=1)
    assert receive(sqs, url) == []
    started = time.monotonic()
    [message] = receive(sqs, url, WaitTimeSeconds=5)
    assert 0.5 < time.monotonic() - started < 2.5, "long poll should wake when visibility ends"
    assert message["Body"] == "m"


def test_delay_per_message_and_per_queue(sqs: Any) -> None:
    url = new_queue(sqs, "delayed", DelaySeconds="1")
    sqs.send_message(QueueUrl=url, MessageBody="queue-delay")
    sqs.send_message(QueueUrl=url, MessageBody="no-delay", DelaySeconds=0)
    assert [m["Body"] for m in receive(sqs, url, MaxNumberOfMessages=10)] == ["no-delay"]
    started = time.monotonic()
    [message] = receive(sqs, url, WaitTimeSeconds=5)
    assert message["Body"] == "queue-delay" and time.monotonic() - started < 2.5


def test_long_poll_wakes_on_send(server: ServerThread, sqs: Any) -> None:
    import threading

    url = new_queue(sqs)
    other = make_client(server.endpoint)
    timer = threading.Timer(0.3, lambda: other.send_message(QueueUrl=url, MessageBody="wake"))
    started = time.monotonic()
    timer.start()
    [message] = receive(sqs, url, WaitTimeSeconds=10)
    elapsed = time.monotonic() - started
    timer.join()
    assert message["Body"] == "wake" and elapsed < 2.0


def test_long_poll_returns_empty_at_deadline(sqs: Any) -> None:
    url = new_queue(sqs, "idle", ReceiveMessageWaitTimeSeconds="1")
    started = time.monotonic()
    assert receive(sqs, url) == []
    assert 0.9 < time.monotonic() - started < 3


# -- dead-letter queues and moves ------------------------------------------------------------------

def _with_dlq(sqs: Any, max_receive_count: int = 2) -> tuple[str, str, str]:
    dlq = new_queue(sqs, "work-dlq")
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count})
    work = new_queue(sqs, "work", RedrivePolicy=policy)
    return work, dlq, dlq_arn


def test_redrive_to_dead_letter_queue(sqs: Any) -> None:
    work, dlq, _ = _with_dlq(sqs, max_receive_count=2)
    sqs.send_message(QueueUrl=work, MessageBody="poison")
    for _ in range(2):
        [message] = receive(sqs, work, VisibilityTimeout=0)
    assert receive(sqs, work) == []
    [dead] = receive(sqs, dlq, AttributeNames=["All"])
    assert dead["MessageId"] == message["MessageId"]
    assert dead["Attributes"]["DeadLetterQueueSourceArn"].endswith(":work")
    sources = sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"]
    assert [u.rsplit("/", 1)[1] for u in sources] == ["work"]


def test_redrive_policy_needs_existing_target(sqs: Any) -> None:
    policy = json.dumps({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:none",
                         "maxReceiveCount": 1})
    with pytest.raises(ClientError) as excinfo:
        new_queue(sqs, "orphan", RedrivePolicy=policy)
    assert error_code(excinfo) == "InvalidParameterValue"
    with pytest.raises(ClientError) as excinfo:
        new_queue(sqs, "bad", RedrivePolicy="{not json")
    assert error_code(excinfo) == "InvalidAttributeValue"


def test_message_move_task_back_to_source(sqs: Any) -> None:
    work, dlq, dlq_arn = _with_dlq(sqs, max_receive_count=1)
    for index in range(3):
        sqs.send_message(QueueUrl=work, MessageBody=f"m{index}")
    for _ in range(2):
        for message in receive(sqs, work, MaxNumberOfMessages=10, VisibilityTimeout=0):
            assert message
    assert len(receive(sqs, dlq, MaxNumberOfMessages=10, VisibilityTimeout=0)) == 3
    handle = sqs.start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
    assert handle
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        [task] = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
        if task["Status"] == "COMPLETED":
            break
        time.sleep(0.05)
    assert task["Status"] == "COMPLETED" and task["ApproximateNumberOfMessagesMoved"] == 3
    bodies = sorted(m["Body"] for m in receive(sqs, work, MaxNumberOfMessages=10))
    assert bodies == ["m0", "m1", "m2"]
    with pytest.raises(ClientError) as excinfo:
        sqs.start_message_move_task(SourceArn=sqs.get_queue_attributes(
            QueueUrl=work, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])
    assert error_code(excinfo) == "InvalidParameterValue"


def test_message_move_task_with_rate_can_be_cancelled(sqs: Any) -> None:
    _work, dlq, dlq_arn = _with_dlq(sqs, max_receive_count=1)
    other = new_queue(sqs, "elsewhere")
    other_arn = sqs.get_queue_attributes(QueueUrl=other, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sqs.send_message_batch(QueueUrl=dlq, Entries=[
        {"Id": str(i), "MessageBody": f"m{i}"} for i in range(10)])
    handle = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=other_arn,
                                         MaxNumberOfMessagesPerSecond=10)["TaskHandle"]
    time.sleep(0.25)
    moved = sqs.cancel_message_move_task(TaskHandle=handle)["ApproximateNumberOfMessagesMoved"]
    assert 1 <= moved < 10
    [task] = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
    assert task["Status"] == "CANCELLED" and task["DestinationArn"] == other_arn
    assert len(receive(sqs, other, MaxNumberOfMessages=10)) == moved
    with pytest.raises(ClientError):
        sqs.cancel_message_move_task(TaskHandle="nope")


def test_message_move_tasks_survive_a_restart(tmp_path: Path) -> None:
    server = ServerThread(tmp_path).start()
    try:
        sqs = make_client(server.endpoint)
        _work, dlq, dlq_arn = _with_dlq(sqs, max_receive_count=1)
        other = new_queue(sqs, "elsewhere")
        other_arn = sqs.get_queue_attributes(QueueUrl=other, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        for start in (0, 10, 20):
            sqs.send_message_batch(QueueUrl=dlq, Entries=[
                {"Id": str(i), "MessageBody": f"m{i}"} for i in range(start, start + 10)])
        # 10 per second: one message every 0.1 s tick, so the stop lands mid-task.
        sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=other_arn,
                                    MaxNumberOfMessagesPerSecond=10)
        time.sleep(0.35)
    finally:
        server.stop()
    server = ServerThread(tmp_path).start()
    try:
        sqs = make_client(server.endpoint)
        [task] = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
        assert task["Status"] == "RUNNING" and 1 <= task["ApproximateNumberOfMessagesMoved"] < 30
        deadline = time.monotonic() + 10
        while task["Status"] == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.1)
            [task] = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
        assert task["Status"] == "COMPLETED" and task["ApproximateNumberOfMessagesMoved"] == 30
        assert task["DestinationArn"] == other_arn
        assert task["ApproximateNumberOfMessagesToMove"] == 30
        bodies: set[str] = set()
        while batch := receive(sqs, other, MaxNumberOfMessages=10):
            bodies.update(m["Body"] for m in batch)
        assert bodies == {f"m{i}" for i in range(30)}
        assert receive(sqs, dlq) == []
    finally:
        server.stop()
    server = ServerThread(tmp_path).start()  # a finished task is still listed after a restart
    try:
        sqs = make_client(server.endpoint)
        [task] = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
        assert task["Status"] == "COMPLETED" and "TaskHandle" not in task
    finally:
        server.stop()


# -- FIFO -----------------------------------------------------------------------------------------

def test_fifo_order_groups_and_dedup(sqs: Any) -> None:
    url = new_queue(sqs, "orders.fifo", FifoQueue="true")
    for index in range(3):
        result = sqs.send_message(QueueUrl=url, MessageBody=f"a{index}", MessageGroupId="A",
                                  MessageDeduplicationId=f"a{index}")
        assert result["SequenceNumber"]
    sqs.send_message(QueueUrl=url, MessageBody="b0", MessageGroupId="B",
                     MessageDeduplicationId="b0")
    duplicate = sqs.send_message(QueueUrl=url, MessageBody="a0 again", MessageGroupId="A",
                                 MessageDeduplicationId="a0")
    first = receive(sqs, url, MaxNumberOfMessages=2, AttributeNames=["All"])
    assert [m["Body"] for m in first] == ["a0", "a1"]
    assert duplicate["MessageId"] == first[0]["MessageId"]
    assert first[0]["Attributes"]["MessageGroupId"] == "A"
    # Group A is blocked while its messages are in flight; B is served.
    assert [m["Body"] for m in receive(sqs, url, MaxNumberOfMessages=10)] == ["b0"]
    assert receive(sqs, url, MaxNumberOfMessages=10) == []
    for message in first:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert [m["Body"] for m in receive(sqs, url, MaxNumberOfMessages=10)] == ["a2"]


def test_fifo_rules(sqs: Any) -> None:
    url = new_queue(sqs, "cbd.fifo", FifoQueue="true", ContentBasedDeduplication="true")
    one = sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    two = sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
    assert one["MessageId"] == two["MessageId"]
    plain = new_queue(sqs, "plain.fifo", FifoQueue="true")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"MessageBody": "m", "MessageDeduplicationId": "d"}, "MissingParameter"),
        ({"MessageBody": "m", "MessageGroupId": "g"}, "InvalidParameterValue"),
        ({"MessageBody": "m", "MessageGroupId": "g", "MessageDeduplicationId": "d",
          "DelaySeconds": 5}, "InvalidParameterValue"),
    ]
    for kwargs, code in cases:
        with pytest.raises(ClientError) as excinfo:
            sqs.send_message(QueueUrl=plain, **kwargs)
        assert error_code(excinfo) == code, kwargs
    with pytest.raises(ClientError) as excinfo:
        new_queue(sqs, "limits.fifo", FifoQueue="true", FifoThroughputLimit="perMessageGroupId")
    assert error_code(excinfo) == "InvalidAttributeValue"
    scoped = new_queue(sqs, "scoped.fifo", FifoQueue="true", DeduplicationScope="messageGroup",
                       FifoThroughputLimit="perMessageGroupId")
    first = sqs.send_message(QueueUrl=scoped, MessageBody="m", MessageGroupId="g1",
                             MessageDeduplicationId="d")
    second = sqs.send_message(QueueUrl=scoped, MessageBody="m", MessageGroupId="g2",
                              MessageDeduplicationId="d")
    assert first["MessageId"] != second["MessageId"]


def test_restart_keeps_queues_messages_and_handles(tmp_path: Path) -> None:
    server = ServerThread(tmp_path).start()
    sqs = make_client(server.endpoint)
    url = new_queue(sqs, "durable", VisibilityTimeout="1")
    sqs.send_message(QueueUrl=url, MessageBody="kept")
    sqs.send_message(QueueUrl=url, MessageBody="held")
    [held] = receive(sqs, url, VisibilityTimeout=30)
    server.stop()
    server = ServerThread(tmp_path).start()
    try:
        sqs = make_client(server.endpoint)
        url = sqs.get_queue_url(QueueName="durable")["QueueUrl"]
        messages = receive(sqs, url, MaxNumberOfMessages=10)
        assert [m["Body"] for m in messages] == ["kept" if held["Body"] == "held" else "held"]
        sqs.delete_message(QueueUrl=url, ReceiptHandle=held["ReceiptHandle"])
        values = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert values["ApproximateNumberOfMessagesNotVisible"] == "1"  # the one just received
        assert values["ApproximateNumberOfMessages"] == "0"
    finally:
        server.stop()


def test_fifo_dead_letter_queue_and_dedup_survive_restart(tmp_path: Path) -> None:
    server = ServerThread(tmp_path).start()
    try:
        sqs = make_client(server.endpoint)
        dlq = new_queue(sqs, "dead.fifo", FifoQueue="true")
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        url = new_queue(sqs, "live.fifo", FifoQueue="true", RedrivePolicy=json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1"}))
        first = sqs.send_message(QueueUrl=url, MessageBody="poison", MessageGroupId="g",
                                 MessageDeduplicationId="p")
        sqs.send_message(QueueUrl=url, MessageBody="next", MessageGroupId="g",
                         MessageDeduplicationId="n")
        [poison] = receive(sqs, url, VisibilityTimeout=0)
        assert poison["Body"] == "poison"
        # The next receive moves "poison" to the DLQ and unblocks the group.
        assert [m["Body"] for m in receive(sqs, url, MaxNumberOfMessages=10)] == ["next"]
        assert [m["Body"] for m in receive(sqs, dlq)] == ["poison"]
    finally:
        server.stop()
    server = ServerThread(tmp_path).start()
    try:
        sqs = make_client(server.endpoint)
        again = sqs.send_message(QueueUrl=url, MessageBody="poison", MessageGroupId="g",
                                 MessageDeduplicationId="p")
        assert again["MessageId"] == first["MessageId"], "dedup ids must survive a restart"
    finally:
        server.stop()
