"""The memory backend on an injected clock: visibility, delay, retention and redrive exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
import pytest

from surge.errors import QueueError, QueueUnavailable
from surge.queue.client.memory import MemoryQueueClient
from surge.queue.interface import OutgoingMessage


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run(scenario: Callable[[MemoryQueueClient, FakeClock], Awaitable[None]]) -> None:
    clock = FakeClock()
    asyncio.run(scenario(MemoryQueueClient(clock), clock))


def test_visibility_deadline_is_exact() -> None:
    async def scenario(client: MemoryQueueClient, clock: FakeClock) -> None:
        await client.create_queue("q", {"VisibilityTimeout": "30"})
        await client.send("q", OutgoingMessage("m"))
        [message] = await client.receive("q")
        clock.advance(29.9)
        assert await client.receive("q") == []
        with pytest.raises(QueueError):  # the batch entry is fine; the call is not
            await client.receive("q", max_messages=0)
        clock.advance(0.1)
        [again] = await client.receive("q")
        assert again.receive_count == 2
        # the first handle is stale: deleting with it deletes nothing
        await client.delete("q", message.receipt_handle)
        assert (await client.get_attributes("q"))["ApproximateNumberOfMessagesNotVisible"] == "1"
        with pytest.raises(QueueError) as caught:
            await client.change_visibility("q", message.receipt_handle, 10)
        assert caught.value.code == "MessageNotInflight"
        await client.delete("q", again.receipt_handle)
        assert (await client.get_attributes("q"))["ApproximateNumberOfMessagesNotVisible"] == "0"

    run(scenario)


def test_delay_queue_and_per_message_delay() -> None:
    async def scenario(client: MemoryQueueClient, clock: FakeClock) -> None:
        await client.create_queue("q", {"DelaySeconds": "5"})
        await client.send("q", OutgoingMessage("queue delay"))
        await client.send("q", OutgoingMessage("no delay", delay_seconds=0))
        assert [m.body for m in await client.receive("q", 10)] == ["no delay"]
        clock.advance(5)
        assert [m.body for m in await client.receive("q", 10)] == ["queue delay"]

    run(scenario)


def test_retention_drops_old_messages() -> None:
    async def scenario(client: MemoryQueueClient, clock: FakeClock) -> None:
        await client.create_queue("q", {"MessageRetentionPeriod": "60"})
        await client.send("q", OutgoingMessage("old"))
        clock.advance(61)
        assert await client.receive("q") == []

    run(scenario)


def test_redrive_keeps_message_when_dead_letter_queue_is_missing() -> None:
    async def scenario(client: MemoryQueueClient, clock: FakeClock) -> None:
        policy = orjson.dumps({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:0:gone",
                               "maxReceiveCount": 1}).decode()
        await client.create_queue("q", {"RedrivePolicy": policy, "VisibilityTimeout": "1"})
        await client.send("q", OutgoingMessage("m"))
        await client.receive("q")
        clock.advance(1)
        [again] = await client.receive("q")
        assert again.receive_count == 2

    run(scenario)


def test_create_queue_errors() -> None:
    async def scenario(client: MemoryQueueClient, clock: FakeClock) -> None:
        await client.create_queue("q", {"VisibilityTimeout": "30"})
        cases = [
            ("q", {"VisibilityTimeout": "31"}, "QueueNameExists"),
            ("r", {"VisibilityTimeout": "50000"}, "InvalidAttributeValue"),
            ("r", {"Bogus": "1"}, "InvalidAttributeName"),
            ("bad name!", {}, "InvalidParameterValue"),
            ("r.fifo", {}, "InvalidParameterValue"),
            ("r", {"RedrivePolicy": "{}"}, "InvalidAttributeValue"),
        ]
        for name, attributes, code in cases:
            with pytest.raises(QueueError) as caught:
                await client.create_queue(name, attributes)
            assert caught.value.code == code, (name, attributes)

    run(scenario)


def test_fifo_deduplication_window_expires() -> None:
    async def scenario(client: MemoryQueueClient, clock: FakeClock) -> None:
        await client.create_queue("q.fifo", {"FifoQueue": "true",
                                             "ContentBasedDeduplication": "true"})
        first = await client.send("q.fifo", OutgoingMessage("same", group_id="g"))
        assert (await client.send("q.fifo", OutgoingMessage("same", group_id="g"))) == first
        clock.advance(301)
        [message] = await client.receive("q.fifo")
        await client.delete("q.fifo", message.receipt_handle)
        later = await client.send("q.fifo", OutgoingMessage("same", group_id="g"))
        assert later.message_id != first.message_id
        assert later.sequence_number is not None and first.sequence_number is not None
        assert int(later.sequence_number) > int(first.sequence_number)

    run(scenario)


def test_clients_can_share_queues_and_closed_client_is_unavailable() -> None:
    async def scenario(client: MemoryQueueClient, clock: FakeClock) -> None:
        other = MemoryQueueClient(clock, share_with=client)
        await client.create_queue("q")
        await other.send("q", OutgoingMessage("from other"))
        [message] = await client.receive("q")
        assert message.body == "from other"
        await other.close()
        with pytest.raises(QueueUnavailable):
            await other.send("q", OutgoingMessage("x"))

    run(scenario)


def test_batch_entry_failures_are_index_aligned() -> None:
    async def scenario(client: MemoryQueueClient, clock: FakeClock) -> None:
        await client.create_queue("q")
        results, failures = await client.send_batch(
            "q",
            [OutgoingMessage("a"), OutgoingMessage("b", delay_seconds=901), OutgoingMessage("")],
        )
        assert results[0] is not None and results[1] is None and results[2] is None
        assert [(f.index, f.code) for f in failures] == [
            (1, "InvalidParameterValue"), (2, "MissingParameter")]
        failures = await client.delete_batch("q", ["garbage", "garbage"])
        assert [(f.index, f.code) for f in failures] == [
            (0, "ReceiptHandleIsInvalid"), (1, "ReceiptHandleIsInvalid")]

    run(scenario)
