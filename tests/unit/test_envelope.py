"""The task envelope codec the enqueue route and the workers share (``surge.envelope``)."""

from __future__ import annotations

import orjson
import pytest

from surge.envelope import (
    MAX_PAYLOAD_DEPTH,
    PayloadTooDeep,
    PoisonMessage,
    TaskEnvelope,
    decode_envelope,
    encode_envelope,
)

KNOWN = {"resize"}


def nested(depth: int) -> object:
    return orjson.loads(b"[" * depth + b"]" * depth)


def test_round_trip() -> None:
    body = encode_envelope("resize", {"w": 3}, "id-1", 1700000000.5, "send-1")
    assert orjson.loads(body) == {"task": "resize", "payload": {"w": 3},
                                  "timestamp": 1700000000.5, "id": "id-1", "send_id": "send-1"}
    assert decode_envelope(body, "m-1", KNOWN) == TaskEnvelope(
        "id-1", "resize", {"w": 3}, 1700000000.5, "send-1")


def test_payload_depth_limit() -> None:
    """orjson writes 254 levels at most; the envelope is one: 253 is the payload's limit,
    and anything deeper is refused with the limit named (never a bare TypeError)."""
    body = encode_envelope("resize", nested(MAX_PAYLOAD_DEPTH), "id", 1.0, "s")
    decoded = decode_envelope(body, "m", KNOWN)
    assert isinstance(decoded, TaskEnvelope) and decoded.payload == nested(MAX_PAYLOAD_DEPTH)
    for depth in (MAX_PAYLOAD_DEPTH + 1, 1024):
        with pytest.raises(PayloadTooDeep, match=f"deeper than {MAX_PAYLOAD_DEPTH} levels"):
            encode_envelope("resize", nested(depth), "id", 1.0, "s")


@pytest.mark.parametrize(("body", "reason"), [
    ("not json", "undecodable body: not JSON"),
    ("[1, 2]", "undecodable body: expected a JSON object, got list"),
    ('{"payload": 1, "id": "x"}', "missing 'task' field"),
    ('{"task": 7, "id": "x"}', "'task' must be a string"),
    ('{"task": "nope", "id": "x"}', "unknown task 'nope'"),
])
def test_poison(body: str, reason: str) -> None:
    decoded = decode_envelope(body, "m-1", KNOWN)
    assert isinstance(decoded, PoisonMessage)
    assert decoded.reason.startswith(reason)


def test_poison_keeps_the_task_id_when_readable() -> None:
    decoded = decode_envelope('{"task": "nope", "id": "abc"}', "m-1", KNOWN)
    assert decoded == PoisonMessage("unknown task 'nope'", "abc", "nope")


def test_missing_id_and_send_id() -> None:
    """A body from another SQS client: the message id stands in for the task id, and the
    send id is unknown (the worker then names the copy by its message id)."""
    assert decode_envelope('{"task": "resize"}', "m-9", KNOWN) == TaskEnvelope(
        "m-9", "resize", None, None, None)
    assert decode_envelope('{"task": "resize", "id": "t", "send_id": 5}', "m-9", KNOWN) == \
        TaskEnvelope("t", "resize", None, None, None)
