"""SQS's rules for names, attributes and call parameters, as pure functions.

Shared by the backends that implement the queue themselves (memory, redis) so they reject
the same calls with the same error codes Amazon SQS uses. The codes are the JSON protocol's
error shape names (``QueueDoesNotExist``, not the query protocol's
``AWS.SimpleQueueService.NonExistentQueue``); ``normalize_error_code`` maps the latter.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sized
from dataclasses import dataclass

import orjson

from surge.errors import QueueError
from surge.queue.interface import OutgoingMessage

MAX_BATCH_ENTRIES = 10
MAX_WAIT_SECONDS = 20
MAX_VISIBILITY_TIMEOUT = 43200  # 12 hours
MAX_DELAY_SECONDS = 900
DEFAULT_MAX_MESSAGE_SIZE = 262144
FIFO_DEDUPLICATION_WINDOW = 300.0

_QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")

# Query-protocol codes (``x-amzn-query-error``, botocore's error Code for SQS) → shape names.
_QUERY_CODE_TO_SHAPE = {
    "AWS.SimpleQueueService.NonExistentQueue": "QueueDoesNotExist",
    "QueueAlreadyExists": "QueueNameExists",
    "AWS.SimpleQueueService.QueueDeletedRecently": "QueueDeletedRecently",
    "AWS.SimpleQueueService.MessageNotInflight": "MessageNotInflight",
    "AWS.SimpleQueueService.TooManyEntriesInBatchRequest": "TooManyEntriesInBatchRequest",
    "AWS.SimpleQueueService.EmptyBatchRequest": "EmptyBatchRequest",
    "AWS.SimpleQueueService.BatchEntryIdsNotDistinct": "BatchEntryIdsNotDistinct",
    "AWS.SimpleQueueService.InvalidBatchEntryId": "InvalidBatchEntryId",
    "AWS.SimpleQueueService.BatchRequestTooLong": "BatchRequestTooLong",
    "AWS.SimpleQueueService.PurgeQueueInProgress": "PurgeQueueInProgress",
    "AWS.SimpleQueueService.UnsupportedOperation": "UnsupportedOperation",
    "ReceiptHandleIsInvalid": "ReceiptHandleIsInvalid",
}

QUEUE_ATTRIBUTE_DEFAULTS = {
    "VisibilityTimeout": "30",
    "DelaySeconds": "0",
    "MessageRetentionPeriod": "345600",
    "ReceiveMessageWaitTimeSeconds": "0",
    "MaximumMessageSize": str(DEFAULT_MAX_MESSAGE_SIZE),
}
_INTEGER_ATTRIBUTE_RANGES = {
    "VisibilityTimeout": (0, MAX_VISIBILITY_TIMEOUT),
    "DelaySeconds": (0, MAX_DELAY_SECONDS),
    "MessageRetentionPeriod": (60, 1209600),
    "ReceiveMessageWaitTimeSeconds": (0, MAX_WAIT_SECONDS),
    "MaximumMessageSize": (1024, DEFAULT_MAX_MESSAGE_SIZE),
}
_OTHER_SETTABLE_ATTRIBUTES = {
    "RedrivePolicy", "RedriveAllowPolicy", "FifoQueue", "ContentBasedDeduplication", "Policy",
    "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds", "SqsManagedSseEnabled",
    "DeduplicationScope", "FifoThroughputLimit",
}


def normalize_error_code(code: str) -> str:
    """The JSON protocol shape name for an SQS error code from either protocol."""
    code = code.rpartition("#")[2]  # "com.amazonaws.sqs#QueueDoesNotExist"
    return _QUERY_CODE_TO_SHAPE.get(code, code)


@dataclass(frozen=True, slots=True)
class RedrivePolicy:
    dead_letter_queue: str  # the queue *name* (last part of the ARN)
    max_receive_count: int


def queue_arn(name: str, region: str = "us-east-1", account_id: str = "000000000000") -> str:
    return f"arn:aws:sqs:{region}:{account_id}:{name}"


def validate_queue_name(name: str, fifo: bool) -> None:
    base = name.removesuffix(".fifo") if fifo else name
    if not _QUEUE_NAME_RE.match(base) or len(name) > 80:
        raise QueueError(
            "InvalidParameterValue",
            "queue names are 1-80 characters of letters, digits, '-' and '_'"
            + (" and end with '.fifo' for FIFO queues" if fifo else ""),
        )
    if not fifo and name.endswith(".fifo"):
        raise QueueError("InvalidParameterValue", "a queue named '.fifo' must set FifoQueue=true")


def validate_queue_attributes(name: str, attributes: dict[str, str]) -> dict[str, str]:
    """The queue's full attribute set (defaults filled in), or QueueError naming the bad one."""
    for key, value in attributes.items():
        if key in _INTEGER_ATTRIBUTE_RANGES:
            low, high = _INTEGER_ATTRIBUTE_RANGES[key]
            if not str(value).isdigit() or not low <= int(value) <= high:
                raise QueueError(
                    "InvalidAttributeValue", f"{key} must be an integer {low}-{high}, got {value!r}"
                )
        elif key not in _OTHER_SETTABLE_ATTRIBUTES:
            raise QueueError("InvalidAttributeName", f"unknown attribute {key}")
    fifo = attributes.get("FifoQueue", "false").lower() == "true"
    if "FifoQueue" in attributes and not fifo:
        raise QueueError("InvalidAttributeValue", "FifoQueue can only be set to true")
    validate_queue_name(name, fifo)
    if "ContentBasedDeduplication" in attributes and not fifo:
        raise QueueError("InvalidAttributeName", "ContentBasedDeduplication is for FIFO queues")
    if "RedrivePolicy" in attributes:
        parse_redrive_policy(attributes["RedrivePolicy"])
    return {**QUEUE_ATTRIBUTE_DEFAULTS, **{k: str(v) for k, v in attributes.items()}}


def parse_redrive_policy(text: str) -> RedrivePolicy:
    try:
        policy = orjson.loads(text)
        arn = str(policy["deadLetterTargetArn"])
        max_receive_count = int(policy["maxReceiveCount"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise QueueError(
            "InvalidAttributeValue",
            "RedrivePolicy must be JSON with deadLetterTargetArn and maxReceiveCount",
        ) from exc
    if not 1 <= max_receive_count <= 1000:
        raise QueueError("InvalidAttributeValue", "maxReceiveCount must be 1-1000")
    return RedrivePolicy(arn.rpartition(":")[2], max_receive_count)


def check_batch_size(entries: Sized) -> None:
    if not entries:
        raise QueueError("EmptyBatchRequest", "a batch needs at least one entry")
    if len(entries) > MAX_BATCH_ENTRIES:
        raise QueueError(
            "TooManyEntriesInBatchRequest",
            f"at most {MAX_BATCH_ENTRIES} entries, got {len(entries)}",
        )


def check_receive_parameters(
    max_messages: int, wait_seconds: float, visibility_timeout: int | None
) -> None:
    if not 1 <= max_messages <= MAX_BATCH_ENTRIES:
        raise QueueError(
            "InvalidParameterValue", f"MaxNumberOfMessages must be 1-10, got {max_messages}"
        )
    if not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
        raise QueueError(
            "InvalidParameterValue", f"WaitTimeSeconds must be 0-20, got {wait_seconds}"
        )
    if visibility_timeout is not None:
        check_visibility_timeout(visibility_timeout)


def check_visibility_timeout(timeout: int) -> None:
    if not 0 <= timeout <= MAX_VISIBILITY_TIMEOUT:
        raise QueueError(
            "InvalidParameterValue", f"VisibilityTimeout must be 0-43200, got {timeout}"
        )


def check_outgoing_message(message: OutgoingMessage, *, fifo: bool, max_size: int) -> None:
    if not message.body:
        raise QueueError("MissingParameter", "the message body must not be empty")
    size = len(message.body.encode()) + sum(
        len(name.encode()) + sum(len(str(v).encode()) for v in value.values())
        for name, value in message.attributes.items()
    )
    if size > max_size:
        raise QueueError(
            "InvalidParameterValue", f"message of {size} bytes exceeds the limit of {max_size}"
        )
    if message.delay_seconds is not None and not 0 <= message.delay_seconds <= MAX_DELAY_SECONDS:
        raise QueueError(
            "InvalidParameterValue", f"DelaySeconds must be 0-900, got {message.delay_seconds}"
        )
    if fifo:
        if not message.group_id:
            raise QueueError("MissingParameter", "FIFO queues need a MessageGroupId")
        if message.delay_seconds:
            raise QueueError("InvalidParameterValue", "FIFO queues take no per-message delay")
    elif message.group_id or message.deduplication_id:
        raise QueueError(
            "InvalidParameterValue", "MessageGroupId/MessageDeduplicationId are for FIFO queues"
        )


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def content_deduplication_id(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()
