"""SQS's limits and validation rules, pure: queue attributes, message contents, batch entries.

Everything raises ``QueueError`` with the code and message Amazon SQS uses, so the wire layer
only has to encode it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from typing import Any

import orjson

from surge.errors import QueueError

MAX_MESSAGE_BYTES = 1024 * 1024  # one message, and the sum of a batch (SQS since 2025)
MIN_MESSAGE_BYTES = 1024  # MaximumMessageSize lower bound
MAX_BATCH_ENTRIES = 10
MAX_MESSAGE_ATTRIBUTES = 10
MAX_WAIT_SECONDS = 20
MAX_VISIBILITY_SECONDS = 43200
MAX_DELAY_SECONDS = 900
FIFO_DEDUP_WINDOW_MS = 5 * 60 * 1000

QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
BATCH_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
DEDUP_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
# SQS allows #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF in bodies.
_INVALID_BODY_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

DEFAULT_ATTRIBUTES = {
    "DelaySeconds": "0",
    "MaximumMessageSize": str(MAX_MESSAGE_BYTES),
    "MessageRetentionPeriod": "345600",
    "ReceiveMessageWaitTimeSeconds": "0",
    "VisibilityTimeout": "30",
    "SqsManagedSseEnabled": "true",
}
FIFO_DEFAULT_ATTRIBUTES = {
    "FifoQueue": "true",
    "ContentBasedDeduplication": "false",
    "DeduplicationScope": "queue",
    "FifoThroughputLimit": "perQueue",
}
_INTEGER_ATTRIBUTES = {
    "DelaySeconds": (0, MAX_DELAY_SECONDS),
    "MaximumMessageSize": (MIN_MESSAGE_BYTES, MAX_MESSAGE_BYTES),
    "MessageRetentionPeriod": (60, 1209600),
    "ReceiveMessageWaitTimeSeconds": (0, MAX_WAIT_SECONDS),
    "VisibilityTimeout": (0, MAX_VISIBILITY_SECONDS),
    "KmsDataKeyReusePeriodSeconds": (60, 86400),
}
_FREE_ATTRIBUTES = {"Policy", "KmsMasterKeyId", "RedrivePolicy", "RedriveAllowPolicy"}
_BOOLEAN_ATTRIBUTES = {"SqsManagedSseEnabled", "ContentBasedDeduplication", "FifoQueue"}
_FIFO_ONLY = {"ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit"}
READ_ONLY_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
)
SETTABLE_ATTRIBUTES = frozenset(
    set(_INTEGER_ATTRIBUTES) | _FREE_ATTRIBUTES | _BOOLEAN_ATTRIBUTES | _FIFO_ONLY
)
ALL_ATTRIBUTE_NAMES = frozenset(SETTABLE_ATTRIBUTES | set(READ_ONLY_ATTRIBUTES))


def invalid(message: str) -> QueueError:
    return QueueError("InvalidParameterValue", message)


def check_queue_name(name: str, fifo: bool) -> None:
    base = name.removesuffix(".fifo") if fifo else name
    if not QUEUE_NAME_RE.match(base) or len(name) > 80:
        raise invalid(
            "Can only include alphanumeric characters, hyphens, or underscores. "
            "1 to 80 in length"
        )


def validate_queue_attributes(
    attributes: dict[str, str], *, fifo: bool, creating: bool
) -> dict[str, str]:
    """Check settable attributes; returns them normalized (booleans lower-case)."""
    normalized: dict[str, str] = {}
    for name, raw in attributes.items():
        value = str(raw)
        if name not in SETTABLE_ATTRIBUTES:
            raise QueueError("InvalidAttributeName", f"Unknown Attribute {name}.")
        if name in _INTEGER_ATTRIBUTES:
            low, high = _INTEGER_ATTRIBUTES[name]
            if not value.lstrip("-").isdigit() or not low <= int(value) <= high:
                raise QueueError(
                    "InvalidAttributeValue",
                    f"Invalid value for the parameter {name}. Reason: must be between "
                    f"{low} and {high}.",
                )
            value = str(int(value))
        elif name in _BOOLEAN_ATTRIBUTES:
            if value.lower() not in ("true", "false"):
                raise QueueError("InvalidAttributeValue",
                                 f"Invalid value for the parameter {name}.")
            value = value.lower()
        if name in _FIFO_ONLY and not fifo:
            raise QueueError("InvalidAttributeName", f"Unknown Attribute {name}.")
        if name == "FifoQueue" and (value == "true") != fifo:
            if not creating:
                raise QueueError("InvalidAttributeName", f"Unknown Attribute {name}.")
            raise QueueError(
                "InvalidParameterValue",
                "The name of a FIFO queue can only include alphanumeric characters, hyphens, "
                "or underscores, must end with .fifo suffix.",
            )
        if name == "DeduplicationScope" and value not in ("queue", "messageGroup"):
            raise QueueError("InvalidAttributeValue", f"Invalid value for the parameter {name}.")
        if name == "FifoThroughputLimit" and value not in ("perQueue", "perMessageGroupId"):
            raise QueueError("InvalidAttributeValue", f"Invalid value for the parameter {name}.")
        if name == "RedrivePolicy" and value:
            value = _normalize_redrive_policy(value)
        if name == "RedriveAllowPolicy" and value:
            _check_redrive_allow_policy(value)
        normalized[name] = value
    return normalized


def check_fifo_combination(attributes: dict[str, str]) -> None:
    if (attributes.get("FifoThroughputLimit") == "perMessageGroupId"
            and attributes.get("DeduplicationScope") == "queue"):
        raise QueueError(
            "InvalidAttributeValue",
            "Invalid value for the parameter FifoThroughputLimit. Reason: "
            "perMessageGroupId is only available with DeduplicationScope messageGroup.",
        )


def _normalize_redrive_policy(value: str) -> str:
    try:
        policy = orjson.loads(value)
        target = str(policy["deadLetterTargetArn"])
        count = int(policy["maxReceiveCount"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise QueueError(
            "InvalidAttributeValue",
            "Invalid value for the parameter RedrivePolicy. Reason: Redrive policy is not a "
            "valid JSON map with deadLetterTargetArn and maxReceiveCount.",
        ) from None
    if not 1 <= count <= 1000:
        raise QueueError(
            "InvalidAttributeValue",
            "Invalid value for the parameter RedrivePolicy. Reason: maxReceiveCount must be "
            "an integer between 1 and 1000.",
        )
    return orjson.dumps({"deadLetterTargetArn": target, "maxReceiveCount": count}).decode()


def _check_redrive_allow_policy(value: str) -> None:
    try:
        policy = orjson.loads(value)
        permission = policy["redrivePermission"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise QueueError(
            "InvalidAttributeValue",
            "Invalid value for the parameter RedriveAllowPolicy.",
        ) from None
    if permission not in ("allowAll", "denyAll", "byQueue"):
        raise QueueError(
            "InvalidAttributeValue",
            "Invalid value for the parameter RedriveAllowPolicy. Reason: redrivePermission "
            "must be allowAll, denyAll or byQueue.",
        )


def int_param(params: dict[str, Any], name: str, low: int, high: int,
              default: int | None = None) -> int | None:
    value = params.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise invalid(f"Value {value} for parameter {name} is invalid. Reason: not an integer.")\
            from None
    if not low <= number <= high:
        raise invalid(
            f"Value {value} for parameter {name} is invalid. Reason: Must be between "
            f"{low} and {high}, if provided."
        )
    return number


def require(params: dict[str, Any], name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise QueueError("MissingParameter", f"The request must contain the parameter {name}.")
    return value


def check_body(body: str) -> None:
    if not body:
        raise QueueError("MissingParameter", "The request must contain the parameter MessageBody.")
    if _INVALID_BODY_CHARS.search(body):
        raise QueueError(
            "InvalidMessageContents",
            "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | "
            "#x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF",
        )


def check_message_attributes(attributes: dict[str, Any]) -> int:
    """Validate SQS MessageAttributes; returns their size in bytes (counted in the limit)."""
    if len(attributes) > MAX_MESSAGE_ATTRIBUTES:
        raise invalid(
            f"Number of message attributes [{len(attributes)}] exceeds the allowed maximum "
            f"[{MAX_MESSAGE_ATTRIBUTES}]."
        )
    size = 0
    for name, value in attributes.items():
        if (not name or len(name) > 256 or not re.match(r"^[A-Za-z0-9_.-]+$", name)
                or name.startswith(".") or name.endswith(".") or ".." in name
                or name.lower().startswith(("aws.", "amazon."))):
            raise invalid(f"Message attribute name '{name}' is invalid.")
        if not isinstance(value, dict):
            raise invalid(f"Message attribute '{name}' must be a map.")
        data_type = value.get("DataType")
        if not data_type:
            raise invalid(f"The message attribute '{name}' must contain a non-empty data type.")
        base_type = str(data_type).split(".", 1)[0]
        if base_type not in ("String", "Number", "Binary"):
            raise invalid(
                f"The type of message attribute '{name}' is invalid. You must use only the "
                "following supported type prefixes: Binary, Number, String."
            )
        if base_type == "Binary":
            blob = value.get("BinaryValue")
            if not blob:
                raise invalid(f"The message attribute '{name}' must contain a non-empty value.")
            size += len(decode_binary(blob))
        else:
            text = value.get("StringValue")
            if text is None or text == "":
                raise invalid(f"The message attribute '{name}' must contain a non-empty value.")
            if base_type == "Number":
                try:
                    float(text)
                except ValueError:
                    raise invalid(f"Can't cast the value of message attribute '{name}' "
                                  "to a number.") from None
            size += len(str(text).encode())
        size += len(name.encode()) + len(str(data_type).encode())
    return size


def decode_binary(blob: Any) -> bytes:
    if isinstance(blob, bytes):
        return blob
    try:
        return base64.b64decode(str(blob), validate=True)
    except ValueError:
        raise invalid("Binary message attribute values must be base64.") from None


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_of_attributes(attributes: dict[str, Any]) -> str:
    """The MD5 SQS computes over message attributes (sorted by name, length-prefixed)."""
    digest = hashlib.md5(usedforsecurity=False)
    for name in sorted(attributes):
        value = attributes[name]
        data_type = str(value["DataType"])
        for part in (name.encode(), data_type.encode()):
            digest.update(struct.pack(">I", len(part)) + part)
        if data_type.startswith("Binary"):
            payload = decode_binary(value["BinaryValue"])
            digest.update(b"\x02")
        else:
            payload = str(value["StringValue"]).encode()
            digest.update(b"\x01")
        digest.update(struct.pack(">I", len(payload)) + payload)
    return digest.hexdigest()


def check_batch_ids(entries: list[dict[str, Any]]) -> None:
    if not entries:
        raise QueueError("EmptyBatchRequest", "There should be at least one entry in the request.")
    if len(entries) > MAX_BATCH_ENTRIES:
        raise QueueError(
            "TooManyEntriesInBatchRequest",
            f"Maximum number of entries per request are {MAX_BATCH_ENTRIES}. "
            f"You have sent {len(entries)}.",
        )
    seen: set[str] = set()
    for entry in entries:
        entry_id = str(entry.get("Id", ""))
        if not BATCH_ID_RE.match(entry_id):
            raise QueueError(
                "InvalidBatchEntryId",
                "A batch entry id can only contain alphanumeric characters, hyphens and "
                "underscores. It can be at most 80 letters long.",
            )
        if entry_id in seen:
            raise QueueError("BatchEntryIdsNotDistinct", f"Id {entry_id} repeated.")
        seen.add(entry_id)
