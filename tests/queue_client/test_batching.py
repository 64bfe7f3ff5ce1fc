"""BatchingSender: batch sizes follow the load, each caller gets its own outcome."""

from __future__ import annotations

import asyncio
import time

import pytest

from surge.errors import QueueError, QueueUnavailable
from surge.queue.client.batching import BatchingSender
from surge.queue.client.memory import MemoryQueueClient
from surge.queue.interface import BatchFailure, OutgoingMessage, SendResult


class GatedClient(MemoryQueueClient):
    """A memory queue whose SendMessageBatch calls wait for the test to release them."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self.gate: asyncio.Event | None = None
        self.fail_next: Exception | None = None

    async def send_batch(
        self, queue: str, messages: list[OutgoingMessage]
    ) -> tuple[list[SendResult | None], list[BatchFailure]]:
        self.batches.append([m.body for m in messages])
        self.in_flight += 1
        self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_next is not None:
                error, self.fail_next = self.fail_next, None
                raise error
            return await super().send_batch(queue, messages)
        finally:
            self.in_flight -= 1


async def _ready(client: GatedClient, queue: str = "q") -> BatchingSender:
    await client.create_queue(queue, {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
                              if queue.endswith(".fifo") else None)
    return BatchingSender(client, max_in_flight=2)


def test_low_load_sends_at_once_without_waiting() -> None:
    async def scenario() -> None:
        client = GatedClient()
        sender = await _ready(client)
        started = time.perf_counter()
        for index in range(3):
            result = await sender.send("q", OutgoingMessage(f"m{index}"))
            assert result.message_id
        assert time.perf_counter() - started < 0.05  # no timer adds latency
        assert client.batches == [["m0"], ["m1"], ["m2"]]

    asyncio.run(scenario())


def test_batches_fill_while_a_batch_is_in_flight() -> None:
    async def scenario() -> None:
        client = GatedClient()
        sender = await _ready(client)
        client.gate = asyncio.Event()
        first = asyncio.ensure_future(sender.send("q", OutgoingMessage("first")))
        await asyncio.sleep(0.01)
        assert client.batches == [["first"]]
        rest = [asyncio.ensure_future(sender.send("q", OutgoingMessage(f"m{i}")))
                for i in range(25)]
        await asyncio.sleep(0.01)
        # ten were waiting: a full batch left at once; max_in_flight=2 holds the others
        assert [len(b) for b in client.batches] == [1, 10]
        client.gate.set()
        results = await asyncio.gather(first, *rest)
        assert len({r.message_id for r in results}) == 26
        assert sorted(len(b) for b in client.batches) == [1, 5, 10, 10]
        assert client.max_in_flight_seen == 2
        assert sender.messages_sent == 26

    asyncio.run(scenario())


def test_callers_in_one_loop_iteration_share_a_batch() -> None:
    async def scenario() -> None:
        client = GatedClient()
        sender = await _ready(client)
        await asyncio.gather(*(sender.send("q", OutgoingMessage(f"m{i}")) for i in range(7)))
        assert client.batches == [[f"m{i}" for i in range(7)]]

    asyncio.run(scenario())


def test_a_failed_entry_fails_only_its_caller() -> None:
    async def scenario() -> None:
        client = GatedClient()
        sender = await _ready(client)
        outcomes = await asyncio.gather(
            sender.send("q", OutgoingMessage("good")),
            sender.send("q", OutgoingMessage("bad", delay_seconds=5000)),
            sender.send("q", OutgoingMessage("also good")),
            return_exceptions=True,
        )
        assert isinstance(outcomes[0], SendResult) and isinstance(outcomes[2], SendResult)
        assert isinstance(outcomes[1], QueueError)
        assert outcomes[1].code == "InvalidParameterValue"
        assert len(client.batches) == 1

    asyncio.run(scenario())


def test_a_failed_call_fails_exactly_its_batch() -> None:
    async def scenario() -> None:
        client = GatedClient()
        sender = await _ready(client)
        client.gate = asyncio.Event()
        client.fail_next = QueueUnavailable("connection refused")
        doomed = [asyncio.ensure_future(sender.send("q", OutgoingMessage(f"d{i}")))
                  for i in range(3)]
        await asyncio.sleep(0.01)
        survivors = [asyncio.ensure_future(sender.send("q", OutgoingMessage(f"s{i}")))
                     for i in range(3)]
        await asyncio.sleep(0.01)
        client.gate.set()
        doomed_outcomes = await asyncio.gather(*doomed, return_exceptions=True)
        assert all(isinstance(o, QueueUnavailable) for o in doomed_outcomes)
        assert len({id(o) for o in doomed_outcomes}) == 3  # one exception object per caller
        assert all(isinstance(o, SendResult) for o in await asyncio.gather(*survivors))

    asyncio.run(scenario())


def test_a_whole_batch_queue_error_reaches_each_caller() -> None:
    async def scenario() -> None:
        sender = BatchingSender(MemoryQueueClient())
        outcomes = await asyncio.gather(
            *(sender.send("missing", OutgoingMessage("x")) for _ in range(2)),
            return_exceptions=True,
        )
        assert [getattr(o, "code", None) for o in outcomes] == ["QueueDoesNotExist"] * 2

    asyncio.run(scenario())


def test_cancelled_caller_is_left_out() -> None:
    async def scenario() -> None:
        client = GatedClient()
        sender = await _ready(client)
        client.gate = asyncio.Event()
        first = asyncio.ensure_future(sender.send("q", OutgoingMessage("first")))
        await asyncio.sleep(0.01)
        cancelled = asyncio.ensure_future(sender.send("q", OutgoingMessage("cancelled")))
        kept = asyncio.ensure_future(sender.send("q", OutgoingMessage("kept")))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        client.gate.set()
        await asyncio.gather(first, kept)
        assert client.batches == [["first"], ["kept"]]
        with pytest.raises(asyncio.CancelledError):
            await cancelled

    asyncio.run(scenario())


def test_fifo_keeps_one_batch_in_flight_and_order() -> None:
    async def scenario() -> None:
        client = GatedClient()
        sender = await _ready(client, "q.fifo")
        sends = [sender.send("q.fifo", OutgoingMessage(f"m{i:02}", group_id="g"))
                 for i in range(30)]
        await asyncio.gather(*sends)
        assert client.max_in_flight_seen == 1
        received = []
        while batch := await client.receive("q.fifo", 10):
            received.extend(m.body for m in batch)
            await client.delete_batch("q.fifo", [m.receipt_handle for m in batch])
        assert received == [f"m{i:02}" for i in range(30)]

    asyncio.run(scenario())


def test_batches_respect_the_byte_limit() -> None:
    async def scenario() -> None:
        client = GatedClient()
        sender = await _ready(client)
        big = "x" * 100_000
        await asyncio.gather(*(sender.send("q", OutgoingMessage(big)) for _ in range(5)))
        assert [len(b) for b in client.batches] == [2, 2, 1]
        await sender.close()

    asyncio.run(scenario())


def test_a_caller_past_the_deadline_gets_timeout_and_its_waiting_message_is_not_sent() -> None:
    async def scenario() -> None:
        client = GatedClient()
        await client.create_queue("q")
        sender = BatchingSender(client, max_in_flight=1, deadline=0.2)
        client.gate = asyncio.Event()
        in_batch = asyncio.ensure_future(sender.send("q", OutgoingMessage("in-batch")))
        await asyncio.sleep(0.01)  # its batch is in flight, held at the gate
        waiting = asyncio.ensure_future(sender.send("q", OutgoingMessage("waiting")))
        started = time.perf_counter()
        for caller in (in_batch, waiting):
            with pytest.raises(TimeoutError):
                await caller
        assert 0.15 < time.perf_counter() - started < 1.0  # 0.2 s, kept to within a sweep
        client.gate.set()  # the batch in flight completes; the lane has nothing to send
        await sender.close()
        assert client.batches == [["in-batch"]]
        fresh = await sender.send("q", OutgoingMessage("after"))  # the sender still works
        assert fresh.message_id and client.batches[-1] == ["after"]
        await asyncio.sleep(0.15)
        assert not sender._timed  # answered sends are dropped at the next sweep

    asyncio.run(scenario())
