"""The worker's pure rules, without sockets or clocks: backoff, slots, heartbeat, retry
decisions, redrive policy (the envelope's tests are in tests/unit/test_envelope.py)."""

from __future__ import annotations

import pytest
from worker_fakes import make_settings

from surge.worker.backoff import MAX_VISIBILITY_SECONDS, backoff_ceiling, full_jitter_delay
from surge.worker.binding import make_binding, parse_redrive_policy
from surge.worker.heartbeat import HeartbeatAction, HeartbeatPolicy, Lease
from surge.worker.retry import DeadLetterNow, LeaveForRedrive, Retry, RetryPolicy
from surge.worker.slots import SlotError, Slots


class TestBackoff:
    def test_ceiling_doubles_up_to_the_cap(self) -> None:
        assert [backoff_ceiling(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]

    def test_huge_attempt_counts_stay_at_the_cap(self) -> None:
        assert backoff_ceiling(10_000, 1.0, 300.0) == 300.0

    def test_full_jitter_spans_zero_to_the_ceiling(self) -> None:
        assert full_jitter_delay(4, 1.0, 300.0, uniform=lambda low, high: low) == 0
        assert full_jitter_delay(4, 1.0, 300.0, uniform=lambda low, high: high) == 8

    def test_never_beyond_sqs_limit(self) -> None:
        assert full_jitter_delay(60, 1.0, 1e9, uniform=lambda low, high: high) == \
            MAX_VISIBILITY_SECONDS


class TestSlots:
    def test_receive_only_what_fits(self) -> None:
        slots = Slots(25)
        assert slots.receive_size() == 10
        slots.take(10)
        slots.take(10)
        assert slots.receive_size() == 5
        slots.take(5)
        assert slots.receive_size() == 0
        slots.give_back(3)
        assert slots.receive_size() == 3

    def test_over_taking_and_over_giving_are_bugs(self) -> None:
        slots = Slots(2)
        with pytest.raises(SlotError):
            slots.take(3)
        with pytest.raises(SlotError):
            slots.give_back(1)


class TestHeartbeat:
    policy = HeartbeatPolicy(visibility_timeout=30.0, max_run_time=100.0)

    def test_extend_at_half_time_again_and_again(self) -> None:
        lease = Lease(started_at=0.0, visible_until=30.0)
        assert self.policy.decide(0.0, lease.visible_until, 14.9) is HeartbeatAction.WAIT
        assert self.policy.decide(0.0, lease.visible_until, 15.0) is HeartbeatAction.EXTEND
        lease.extended(15.0, self.policy.extension_seconds())
        assert lease.visible_until == 45.0
        assert self.policy.decide(0.0, lease.visible_until, 29.0) is HeartbeatAction.WAIT
        assert self.policy.decide(0.0, lease.visible_until, 30.0) is HeartbeatAction.EXTEND

    def test_cancel_past_max_run_time(self) -> None:
        assert self.policy.decide(0.0, 200.0, 100.0) is HeartbeatAction.CANCEL
        assert self.policy.next_check(0.0, 200.0) == 100.0

    def test_extension_is_whole_seconds(self) -> None:
        assert HeartbeatPolicy(0.4, 10).extension_seconds() == 1
        assert HeartbeatPolicy(2.5, 10).extension_seconds() == 3


class TestRetryPolicy:
    policy = RetryPolicy(1.0, 60.0, max_receive_count=3, uniform=lambda low, high: high)

    def test_retry_with_growing_backoff(self) -> None:
        assert self.policy.decide(1, "boom", permanent=False) == Retry(1)
        assert self.policy.decide(2, "boom", permanent=False) == Retry(2)

    def test_last_allowed_attempt_is_left_for_redrive(self) -> None:
        decision = self.policy.decide(3, "boom", permanent=False)
        assert isinstance(decision, LeaveForRedrive)
        assert "failed 3 of 3 attempts: boom" in decision.reason

    def test_beyond_the_limit_the_worker_moves_it_itself(self) -> None:
        decision = self.policy.decide(4, "boom", permanent=False)
        assert isinstance(decision, DeadLetterNow)
        assert "not redriven" in decision.reason

    def test_permanent_goes_to_the_dead_letter_queue_now(self) -> None:
        assert self.policy.decide(1, "bad", permanent=True) == \
            DeadLetterNow("permanent failure: bad")

    def test_without_redrive_it_retries_forever(self) -> None:
        policy = RetryPolicy(1.0, 60.0, max_receive_count=None)
        assert isinstance(policy.decide(500, "boom", permanent=False), Retry)


class TestBinding:
    def test_redrive_policy_from_arn(self) -> None:
        policy = parse_redrive_policy(
            '{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:1:images-dead","maxReceiveCount":"4"}')
        assert (policy.dead_letter_queue, policy.max_receive_count) == ("images-dead", 4)

    @pytest.mark.parametrize("text", [None, "", "garbage", "[]"])
    def test_missing_or_broken_policy(self, text: str | None) -> None:
        policy = parse_redrive_policy(text)
        assert (policy.dead_letter_queue, policy.max_receive_count) == (None, None)

    def test_defaults_from_queue_attributes(self) -> None:
        worker = make_settings({"handlers": {"t": "m:f"}}).workers["jobs"]
        binding = make_binding(worker, {"VisibilityTimeout": "45"})
        assert binding.visibility_timeout == 45.0
        assert binding.receive_visibility is None
        assert binding.dead_letter_queue == "jobs-dlq"
        assert binding.max_receive_count is None

    def test_worker_visibility_overrides_the_queue(self) -> None:
        worker = make_settings({"handlers": {"t": "m:f"},
                                "visibility_timeout": "2.5s"}).workers["jobs"]
        binding = make_binding(worker, {"VisibilityTimeout": "45"})
        assert (binding.visibility_timeout, binding.receive_visibility) == (2.5, 3)
