"""SQS request parameters and responses as plain dicts, shared by the http and aws backends.

The AWS JSON 1.0 body of an action and botocore's keyword arguments for it are the same
structure (``QueueUrl``, ``Entries``, ``MessageAttributes`` …), so one pure translation
serves both: the http backend serialises these dicts with orjson, the aws backend passes
them to aiobotocore.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from surge.queue.client.rules import normalize_error_code
from surge.queue.interface import BatchFailure, OutgoingMessage, ReceivedMessage, SendResult

# Ask for every system attribute (ApproximateReceiveCount, SentTimestamp, MessageGroupId …)
# and every message attribute: workers need the receive count and the trace attributes.
_ALL = ["All"]


def send_message_params(queue_url: str, message: OutgoingMessage) -> dict[str, Any]:
    return {"QueueUrl": queue_url, **_message_fields(message)}


def send_batch_params(queue_url: str, messages: list[OutgoingMessage]) -> dict[str, Any]:
    entries = [{"Id": str(index), **_message_fields(m)} for index, m in enumerate(messages)]
    return {"QueueUrl": queue_url, "Entries": entries}


def receive_params(queue_url: str, max_messages: int, wait_seconds: float,
                   visibility_timeout: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "QueueUrl": queue_url,
        "MaxNumberOfMessages": max_messages,
        # SQS takes whole seconds; rounding up never returns before the caller's wait ends
        "WaitTimeSeconds": math.ceil(wait_seconds),
        "AttributeNames": _ALL,
        "MessageSystemAttributeNames": _ALL,
        "MessageAttributeNames": _ALL,
    }
    if visibility_timeout is not None:
        params["VisibilityTimeout"] = visibility_timeout
    return params


def delete_batch_params(queue_url: str, receipt_handles: list[str]) -> dict[str, Any]:
    entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(receipt_handles)]
    return {"QueueUrl": queue_url, "Entries": entries}


def change_visibility_batch_params(queue_url: str,
                                   entries: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "QueueUrl": queue_url,
        "Entries": [
            {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": timeout}
            for i, (handle, timeout) in enumerate(entries)
        ],
    }


def parse_send_result(response: dict[str, Any]) -> SendResult:
    return SendResult(
        message_id=response["MessageId"],
        md5_of_body=response["MD5OfMessageBody"],
        sequence_number=response.get("SequenceNumber"),
    )


def parse_send_batch(response: dict[str, Any],
                     count: int) -> tuple[list[SendResult | None], list[BatchFailure]]:
    results: list[SendResult | None] = [None] * count
    for entry in response.get("Successful", []):
        results[int(entry["Id"])] = parse_send_result(entry)
    return results, parse_failures(response)


def parse_failures(response: dict[str, Any]) -> list[BatchFailure]:
    failures = [
        BatchFailure(
            index=int(entry["Id"]),
            code=normalize_error_code(entry.get("Code", "InternalError")),
            message=entry.get("Message", ""),
            sender_fault=bool(entry.get("SenderFault", True)),
        )
        for entry in response.get("Failed", [])
    ]
    return sorted(failures, key=lambda failure: failure.index)


def parse_received(response: dict[str, Any]) -> list[ReceivedMessage]:
    return [
        ReceivedMessage(
            message_id=item["MessageId"],
            receipt_handle=item["ReceiptHandle"],
            body=item["Body"],
            md5_of_body=item["MD5OfBody"],
            attributes=dict(item.get("Attributes", {})),
            message_attributes={
                name: _attribute_value(value)
                for name, value in item.get("MessageAttributes", {}).items()
            },
        )
        for item in response.get("Messages", [])
    ]


def _message_fields(message: OutgoingMessage) -> dict[str, Any]:
    fields: dict[str, Any] = {"MessageBody": message.body}
    if message.delay_seconds is not None:
        fields["DelaySeconds"] = message.delay_seconds
    if message.attributes:
        fields["MessageAttributes"] = {k: dict(v) for k, v in message.attributes.items()}
    if message.group_id is not None:
        fields["MessageGroupId"] = message.group_id
    if message.deduplication_id is not None:
        fields["MessageDeduplicationId"] = message.deduplication_id
    return fields


def _attribute_value(value: dict[str, Any]) -> dict[str, str]:
    """Keep DataType and the value; botocore decodes BinaryValue to bytes, JSON keeps base64."""
    kept: dict[str, str] = {"DataType": value["DataType"]}
    if "StringValue" in value:
        kept["StringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        binary = value["BinaryValue"]
        kept["BinaryValue"] = (
            base64.b64encode(binary).decode() if isinstance(binary, bytes) else binary
        )
    return kept
