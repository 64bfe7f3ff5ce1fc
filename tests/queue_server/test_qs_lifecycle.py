"""The message lifecycle and the broker, pure: no SQLite, no sockets, the clock injected."""

from __future__ import annotations

import json

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from surge.errors import QueueError
from surge.queue.server.broker import Broker
from surge.queue.server.lifecycle import (
    TRANSITIONS,
    Event,
    IllegalTransition,
    Lifecycle,
    State,
)

START = 1_700_000_000_000


def test_transition_table_has_no_way_out_of_terminal_states() -> None:
    for (state, _event), _target in TRANSITIONS.items():
        assert state not in (State.DELETED, State.DEAD_LETTERED, State.EXPIRED, State.PURGED)


def test_lifecycle_moves() -> None:
    life = Lifecycle.sent(START, delay_ms=1000)
    assert life.settle(START + 999) is State.DELAYED
    with pytest.raises(IllegalTransition):
        life.receive(START + 999, 30_000)
    token = life.receive(START + 1000, 30_000)
    assert (life.state, token, life.receive_count, life.first_receive_at) == (
        State.IN_FLIGHT, 1, 1, START + 1000)
    life.change_visibility(START + 2000, 0)
    assert life.state is State.VISIBLE
    life.receive(START + 3000, 5_000)
    assert life.settle(START + 8000) is State.VISIBLE
    life.delete(START + 8000)
    assert life.state is State.DELETED
    with pytest.raises(IllegalTransition) as excinfo:
        life.delete(START + 9000)
    assert excinfo.value.event is Event.DELETE


def test_change_visibility_needs_in_flight() -> None:
    life = Lifecycle.sent(START, 0)
    with pytest.raises(IllegalTransition):
        life.change_visibility(START, 10_000)


def test_retention_expiry_and_fifo_dedup_window() -> None:
    broker = Broker()
    broker.create_queue("q", {"MessageRetentionPeriod": "60"}, {}, START)
    broker.send("q", "old", START)
    broker.send("q", "new", START + 30_000)
    assert broker.counts("q", START + 59_999) == (2, 0, 0)
    assert broker.counts("q", START + 60_000) == (1, 0, 0)
    [delivery] = broker.receive("q", START + 60_000, 10)
    assert delivery.message.body == "new"

    broker.create_queue("f.fifo", {"FifoQueue": "true"}, {}, START)
    first = broker.send("f.fifo", "m", START, group_id="g", dedup_id="d")
    assert broker.send("f.fifo", "m", START + 299_999, group_id="g",
                       dedup_id="d").message_id == first.message_id
    assert broker.send("f.fifo", "m", START + 300_000, group_id="g",
                       dedup_id="d").message_id != first.message_id


def test_stale_receipt_handle_does_not_delete() -> None:
    broker = Broker()
    broker.create_queue("q", {}, {}, START)
    broker.send("q", "m", START)
    [first] = broker.receive("q", START, 1, visibility_seconds=1)
    [second] = broker.receive("q", START + 1000, 1)
    broker.delete("q", broker.receipt_handle("q", first), START + 1000)
    assert broker.counts("q", START + 1000) == (0, 1, 0)
    broker.delete("q", broker.receipt_handle("q", second), START + 1000)
    assert broker.counts("q", START + 1000) == (0, 0, 0)


MAX_RECEIVES = 3
RETENTION_MS = 60_000


class BrokerAgainstModel(RuleBasedStateMachine):
    """A standard queue with a dead-letter queue, against the simplest model of SQS."""

    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.broker = Broker()
        self.broker.create_queue("dlq", {"MessageRetentionPeriod": "1209600"}, {}, self.now)
        policy = json.dumps({"deadLetterTargetArn": self.broker.arn("dlq"),
                             "maxReceiveCount": MAX_RECEIVES})
        self.broker.create_queue("q", {"RedrivePolicy": policy, "MessageRetentionPeriod": "60"},
                                 {}, self.now)
        # message id → {"visible_at", "count", "token", "sent", "gone", "dead"}
        self.model: dict[str, dict[str, int | bool]] = {}
        self.handles: list[tuple[str, str, int]] = []  # (message id, handle, token)

    def _live(self, message_id: str) -> bool:
        entry = self.model[message_id]
        return not entry["gone"] and not entry["dead"] and \
            self.now < int(entry["sent"]) + RETENTION_MS

    @rule(delay=st.sampled_from([0, 0, 1, 5]))
    def send(self, delay: int) -> None:
        message = self.broker.send("q", "body", self.now, delay_seconds=delay)
        self.model[message.message_id] = {"visible_at": self.now + delay * 1000, "count": 0,
                                          "token": 0, "sent": self.now, "gone": False,
                                          "dead": False}

    @rule(max_messages=st.integers(1, 10), visibility=st.sampled_from([0, 1, 2, 30]))
    def receive(self, max_messages: int, visibility: int) -> None:
        visible_before = {mid for mid in self.model
                          if self._live(mid) and int(self.model[mid]["visible_at"]) <= self.now}
        deliveries = self.broker.receive("q", self.now, max_messages, visibility)
        assert len(deliveries) <= max_messages
        dead_now = {m.message_id for m in self.broker.queues["dlq"].messages.values()} - {
            mid for mid, e in self.model.items() if e["dead"]}
        for mid in dead_now:
            assert mid in visible_before and int(self.model[mid]["count"]) >= MAX_RECEIVES
            self.model[mid]["dead"] = True
        for delivery in deliveries:
            mid = delivery.message.message_id
            assert mid in visible_before, "only visible messages may be received"
            entry = self.model[mid]
            entry["count"] = int(entry["count"]) + 1
            entry["visible_at"] = self.now + visibility * 1000
            entry["token"] = delivery.receipt_token
            assert delivery.message.life.receive_count == entry["count"] <= MAX_RECEIVES
            self.handles.append((mid, self.broker.receipt_handle("q", delivery),
                                 delivery.receipt_token))
        if len(deliveries) + len(dead_now) < max_messages:
            assert len(deliveries) + len(dead_now) == len(visible_before), \
                "a receive takes every visible message up to its maximum"

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        mid, handle, token = data.draw(st.sampled_from(self.handles))
        self.broker.delete("q", handle, self.now)
        entry = self.model[mid]
        if self._live(mid) and entry["token"] == token:
            entry["gone"] = True

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), timeout=st.sampled_from([0, 1, 10]))
    def change_visibility(self, data: st.DataObject, timeout: int) -> None:
        mid, handle, token = data.draw(st.sampled_from(self.handles))
        entry = self.model[mid]
        in_flight = self._live(mid) and entry["token"] == token and \
            int(entry["visible_at"]) > self.now
        try:
            self.broker.change_visibility("q", handle, timeout, self.now)
        except QueueError:
            assert not in_flight
        else:
            assert in_flight
            entry["visible_at"] = self.now + timeout * 1000

    @rule(ms=st.sampled_from([1, 500, 1000, 2500, 20_000]))
    def advance_clock(self, ms: int) -> None:
        self.now += ms

    @invariant()
    def counts_match(self) -> None:
        visible = in_flight = delayed = 0
        for mid, entry in self.model.items():
            if not self._live(mid):
                continue
            if int(entry["visible_at"]) <= self.now:
                visible += 1
            elif int(entry["count"]) > 0:
                in_flight += 1
            else:
                delayed += 1
        assert self.broker.counts("q", self.now) == (visible, in_flight, delayed)
        dead = {mid for mid, entry in self.model.items() if entry["dead"]}
        assert {m.message_id for m in self.broker.queues["dlq"].messages.values()} == dead


TestBrokerAgainstModel = BrokerAgainstModel.TestCase
TestBrokerAgainstModel.settings = settings(max_examples=60, stateful_step_count=30,
                                           deadline=None)
