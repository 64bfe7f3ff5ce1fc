"""The memory queue against a model of SQS visibility, driven by random operation sequences.

Hypothesis runs sends, receives, deletes, visibility changes and clock jumps in any order;
after every step the queue must agree with the model: a message is never delivered while
in flight, receive counts go up by one per delivery, stale handles change nothing, and the
attribute counts add up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from surge.errors import QueueError
from surge.queue.client.memory import MemoryQueueClient
from surge.queue.interface import OutgoingMessage


@dataclass
class ModelMessage:
    deadline: float | None = None  # in flight until then; None: never received
    handle: str | None = None
    count: int = 0
    deleted: bool = False


class MemoryQueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000_000.0
        self.loop = asyncio.new_event_loop()
        self.client = MemoryQueueClient(lambda: self.now)
        self.loop.run_until_complete(self.client.create_queue("q", {"VisibilityTimeout": "10"}))
        self.model: dict[str, ModelMessage] = {}
        self.handles: list[str] = []
        self.owner_of: dict[str, str] = {}  # every handle ever issued → its message id

    def teardown(self) -> None:
        self.loop.close()

    def run(self, coroutine):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coroutine)

    def in_flight(self, message: ModelMessage) -> bool:
        return message.deadline is not None and message.deadline > self.now

    @rule(body=st.text(min_size=1, max_size=5))
    def send(self, body: str) -> None:
        result = self.run(self.client.send("q", OutgoingMessage(body)))
        self.model[result.message_id] = ModelMessage()

    @rule(max_messages=st.integers(1, 10), timeout=st.sampled_from([None, 0, 1, 5, 30]))
    def receive(self, max_messages: int, timeout: int | None) -> None:
        received = self.run(self.client.receive("q", max_messages, 0, timeout))
        visible = [m for m in self.model.values() if not m.deleted and not self.in_flight(m)]
        assert len(received) == min(max_messages, len(visible))
        for message in received:
            expected = self.model[message.message_id]
            assert not expected.deleted
            assert not self.in_flight(expected), "delivered while in flight"
            assert message.receive_count == expected.count + 1
            expected.count += 1
            expected.deadline = self.now + (10 if timeout is None else timeout)
            expected.handle = message.receipt_handle
            self.handles.append(message.receipt_handle)
            self.owner_of[message.receipt_handle] = message.message_id

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        if not self.handles:
            return
        handle = data.draw(st.sampled_from(self.handles))
        self.run(self.client.delete("q", handle))
        owner = self.model[self.owner_of[handle]]
        if owner.handle == handle:  # a stale handle deletes nothing
            owner.deleted = True

    @rule(data=st.data(), timeout=st.integers(0, 20))
    def change_visibility(self, data: st.DataObject, timeout: int) -> None:
        if not self.handles:
            return
        handle = data.draw(st.sampled_from(self.handles))
        owner = self.model[self.owner_of[handle]]
        latest = owner.handle == handle and not owner.deleted and self.in_flight(owner)
        try:
            self.run(self.client.change_visibility("q", handle, timeout))
        except QueueError as exc:
            assert exc.code == "MessageNotInflight"
            assert not latest
        else:
            assert latest
            owner.deadline = self.now + timeout

    @rule(seconds=st.sampled_from([0.5, 1, 5, 11, 31]))
    def advance_clock(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def counts_add_up(self) -> None:
        attributes = self.run(self.client.get_attributes("q"))
        live = [m for m in self.model.values() if not m.deleted]
        in_flight = sum(1 for m in live if self.in_flight(m))
        assert int(attributes["ApproximateNumberOfMessagesNotVisible"]) == in_flight
        assert int(attributes["ApproximateNumberOfMessages"]) == len(live) - in_flight


MemoryQueueMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40,
                                                deadline=None)
TestMemoryQueueModel = MemoryQueueMachine.TestCase
