"""The query protocol (form posts, XML out) with raw HTTP, as older SDKs and curl speak it."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from typing import Any

from qs_support import ServerThread

NS = {"sqs": "http://queue.amazonaws.com/doc/2012-11-05/"}


def post(url: str, **params: Any) -> tuple[int, ET.Element]:
    data = urllib.parse.urlencode({"Version": "2012-11-05", **params}).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDQUERY/20250101/us-east-1/sqs/"
                         "aws4_request, SignedHeaders=host, Signature=abc",
    })
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, ET.fromstring(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, ET.fromstring(exc.read())


def texts(root: ET.Element, path: str) -> list[str]:
    return [element.text or "" for element in root.iterfind(path, NS)]


def test_query_protocol_round_trip(server: ServerThread) -> None:
    status, root = post(server.endpoint + "/", Action="CreateQueue", QueueName="legacy",
                        **{"Attribute.1.Name": "VisibilityTimeout", "Attribute.1.Value": "40",
                           "Tag.1.Key": "team", "Tag.1.Value": "perl"})
    assert status == 200
    [url] = texts(root, ".//sqs:CreateQueueResult/sqs:QueueUrl")
    assert url.endswith("/000000000000/legacy")

    status, root = post(url, Action="SendMessage", MessageBody="from perl & co <3>",
                        **{"MessageAttribute.1.Name": "kind",
                           "MessageAttribute.1.Value.DataType": "String",
                           "MessageAttribute.1.Value.StringValue": "legacy"})
    assert status == 200
    [message_id] = texts(root, ".//sqs:SendMessageResult/sqs:MessageId")
    [attributes_md5] = texts(root, ".//sqs:SendMessageResult/sqs:MD5OfMessageAttributes")

    status, root = post(server.endpoint + "/", Action="SendMessageBatch", QueueUrl=url, **{
        "SendMessageBatchRequestEntry.1.Id": "a",
        "SendMessageBatchRequestEntry.1.MessageBody": "batch a",
        "SendMessageBatchRequestEntry.2.Id": "b",
        "SendMessageBatchRequestEntry.2.MessageBody": "batch \x00 bad",
    })
    assert texts(root, ".//sqs:SendMessageBatchResultEntry/sqs:Id") == ["a"]
    assert texts(root, ".//sqs:BatchResultErrorEntry/sqs:Code") == ["InvalidMessageContents"]

    status, root = post(url, Action="ReceiveMessage", MaxNumberOfMessages="10",
                        **{"AttributeName.1": "All", "MessageAttributeName.1": "All"})
    assert status == 200
    messages = root.findall(".//sqs:ReceiveMessageResult/sqs:Message", NS)
    assert len(messages) == 2
    first = next(m for m in messages if m.findtext("sqs:MessageId", None, NS) == message_id)
    assert first.findtext("sqs:Body", None, NS) == "from perl & co <3>"
    assert first.findtext("sqs:MD5OfMessageAttributes", None, NS) == attributes_md5
    names = texts(first, "sqs:Attribute/sqs:Name")
    assert "ApproximateReceiveCount" in names and "SenderId" in names
    assert texts(first, "sqs:MessageAttribute/sqs:Value/sqs:StringValue") == ["legacy"]
    handles = [m.findtext("sqs:ReceiptHandle", None, NS) for m in messages]

    status, root = post(url, Action="DeleteMessageBatch", **{
        f"DeleteMessageBatchRequestEntry.{i + 1}.{key}": value
        for i, handle in enumerate(handles)
        for key, value in (("Id", f"d{i}"), ("ReceiptHandle", handle))
    })
    assert texts(root, ".//sqs:DeleteMessageBatchResultEntry/sqs:Id") == ["d0", "d1"]

    status, root = post(url, Action="GetQueueAttributes", **{"AttributeName.1": "All"})
    attributes = dict(zip(texts(root, ".//sqs:Attribute/sqs:Name"),
                          texts(root, ".//sqs:Attribute/sqs:Value"), strict=True))
    assert attributes["VisibilityTimeout"] == "40"
    assert attributes["ApproximateNumberOfMessages"] == "0"

    status, root = post(url, Action="ListQueueTags")
    assert texts(root, ".//sqs:Tag/sqs:Key") == ["team"]
    status, root = post(server.endpoint + "/", Action="ListQueues", QueueNamePrefix="leg")
    assert texts(root, ".//sqs:QueueUrl") == [url]


def test_query_protocol_errors(server: ServerThread) -> None:
    status, root = post(server.endpoint + "/", Action="GetQueueUrl", QueueName="missing")
    assert status == 400
    assert root.findtext(".//sqs:Error/sqs:Code", None, NS) == \
        "AWS.SimpleQueueService.NonExistentQueue"
    assert root.findtext(".//sqs:Error/sqs:Type", None, NS) == "Sender"
    assert root.findtext(".//sqs:RequestId", None, NS)

    status, root = post(server.endpoint + "/", Action="CreateQueue")
    assert status == 400
    assert root.findtext(".//sqs:Error/sqs:Code", None, NS) == "MissingParameter"

    status, root = post(server.endpoint + "/", Action="Frobnicate")
    assert root.findtext(".//sqs:Error/sqs:Code", None, NS) == "InvalidAction"

    post(server.endpoint + "/", Action="CreateQueue", QueueName="q")
    status, root = post(server.endpoint + "/000000000000/q", Action="ReceiveMessage",
                        MaxNumberOfMessages="11")
    assert root.findtext(".//sqs:Error/sqs:Code", None, NS) == "InvalidParameterValue"


def test_ping(server: ServerThread) -> None:
    with urllib.request.urlopen(server.endpoint + "/_surge/ping", timeout=5) as response:
        assert response.status == 200


def test_query_protocol_over_get(server: ServerThread) -> None:
    post(server.endpoint + "/", Action="CreateQueue", QueueName="viaget")
    query = urllib.parse.urlencode({"Action": "GetQueueUrl", "QueueName": "viaget"})
    with urllib.request.urlopen(f"{server.endpoint}/?{query}", timeout=5) as response:
        root = ET.fromstring(response.read())
    assert texts(root, ".//sqs:QueueUrl")[0].endswith("/viaget")
