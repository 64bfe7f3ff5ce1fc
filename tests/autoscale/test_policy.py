"""The target-tracking decision, exactly: every expected size is computed by hand."""

import pytest

from surge.autoscale.activity import ActivityHistory, ScalingActivity
from surge.autoscale.policy import Capacity, Decision, Direction, GroupScaler, Reading, Rules

RULES = Rules(min=2, max=20, evaluation_periods=3, scale_in_evaluation_periods=5,
              scale_in_margin=0.1, scale_out_cooldown=30, scale_in_cooldown=60)


def feed(scaler, start, values, capacity, policy="cpu", period=10, instances=4):
    """One datapoint per period; returns the decisions in order (None for no action)."""
    decisions = []
    for step, value in enumerate(values):
        reading = None if value is None else Reading(value, instances)
        decisions.append(scaler.evaluate(start + step * period, {policy: reading}, capacity))
    return decisions


def test_desired_is_ceil_of_current_times_metric_over_target():
    scaler = GroupScaler(RULES, {"cpu": 70})
    assert scaler.desired_for("cpu", Reading(90, 4)) == 6  # 4 × 90 / 70 = 5.14 → 6
    assert scaler.desired_for("cpu", Reading(70, 4)) == 4  # exactly on target: no change
    assert scaler.desired_for("cpu", Reading(35, 4)) == 2  # 2.0
    assert scaler.desired_for("cpu", Reading(10, 4)) == 2  # 0.57 → 1, held at min 2
    assert scaler.desired_for("cpu", Reading(100, 18)) == 20  # 25.7 → held at max 20


def test_scale_out_after_the_evaluation_periods_over_target():
    scaler = GroupScaler(RULES, {"cpu": 70})
    decisions = feed(scaler, 0, [90, 90, 90], Capacity(desired=4, warming=0))
    assert decisions[:2] == [None, None]  # two datapoints over target are not enough
    assert decisions[2] == Decision(Direction.OUT, "cpu", 90, 70, 4, 6)


def test_a_datapoint_under_target_restarts_the_scale_out_streak():
    scaler = GroupScaler(RULES, {"cpu": 70})
    assert feed(scaler, 0, [90, 90, 60, 90, 90], Capacity(4, 0)) == [None] * 5


def test_missing_data_means_no_action():
    scaler = GroupScaler(RULES, {"cpu": 70})
    assert feed(scaler, 0, [90, None, 90, 90], Capacity(4, 0)) == [None] * 4
    scaler = GroupScaler(RULES, {"cpu": 70})
    assert feed(scaler, 0, [10, 10, 10, None, 10, 10], Capacity(4, 0)) == [None] * 6


def test_scale_in_needs_longer_and_a_margin_under_target():
    scaler = GroupScaler(RULES, {"cpu": 70})
    # 64 is under 70 but not under 70 × 0.9 = 63: never a scale-in.
    assert feed(scaler, 0, [64] * 8, Capacity(4, 0)) == [None] * 8
    scaler = GroupScaler(RULES, {"cpu": 70})
    decisions = feed(scaler, 0, [30] * 5, Capacity(4, 0))
    assert decisions[:4] == [None] * 4  # five datapoints needed, not three
    # 4 × 30 / 70 = 1.71 → 2
    assert decisions[4] == Decision(Direction.IN, "cpu", 30, 70, 4, 2)


def test_scale_in_cooldown_blocks_scale_in_but_not_scale_out():
    scaler = GroupScaler(RULES, {"cpu": 70})
    assert feed(scaler, 0, [30] * 5, Capacity(6, 0), instances=6)[-1] == \
        Decision(Direction.IN, "cpu", 30, 70, 6, 3)  # at t=40: 6 × 30 / 70 = 2.57 → 3
    # 50 s after that scale-in (< 60 s cooldown): still low, no second scale-in ...
    assert feed(scaler, 90, [10], Capacity(3, 0), instances=3) == [None]
    # ... 60 s after it the cooldown is over: 3 × 10 / 70 = 0.43 → min 2.
    assert feed(scaler, 100, [10], Capacity(3, 0), instances=3) == \
        [Decision(Direction.IN, "cpu", 10, 70, 3, 2)]
    # A scale-out right after a scale-in is not held back by the scale-in cooldown.
    assert feed(scaler, 110, [95, 95, 95], Capacity(2, 0), instances=2)[-1] == \
        Decision(Direction.OUT, "cpu", 95, 70, 2, 3)  # 2 × 95 / 70 = 2.71 → 3


def test_scale_out_cooldown_blocks_scale_in_and_counts_added_capacity():
    scaler = GroupScaler(RULES, {"cpu": 70})
    assert feed(scaler, 0, [90] * 3, Capacity(4, 0))[-1].to_desired == 6
    # Still 4 in service at 90 %: 6 is already desired, so no second scale-out (the added
    # capacity counts toward it) ...
    assert feed(scaler, 30, [90], Capacity(6, 2)) == [None]
    # ... only more load grows it further: 4 × 140 / 70 = 8.
    assert feed(scaler, 40, [140], Capacity(6, 2)) == \
        [Decision(Direction.OUT, "cpu", 140, 70, 6, 8)]
    # Low for long enough and warmed up, but within the scale-out cooldown: no scale-in.
    slow = GroupScaler(Rules(min=2, max=20, evaluation_periods=3, scale_in_evaluation_periods=5,
                             scale_out_cooldown=100, scale_in_cooldown=0), {"cpu": 70})
    assert feed(slow, 0, [90] * 3, Capacity(4, 0))[-1].to_desired == 6  # at t=20
    assert feed(slow, 30, [10] * 9, Capacity(6, 0), instances=6) == [None] * 9  # to t=110
    assert feed(slow, 120, [10], Capacity(6, 0), instances=6) == \
        [Decision(Direction.IN, "cpu", 10, 70, 6, 2)]  # 6 × 10 / 70 = 0.86 → min 2


def test_warming_instances_block_scale_in():
    scaler = GroupScaler(RULES, {"cpu": 70})
    assert feed(scaler, 0, [10] * 6, Capacity(4, warming=1)) == [None] * 6
    assert feed(scaler, 60, [10], Capacity(4, warming=0)) == \
        [Decision(Direction.IN, "cpu", 10, 70, 4, 2)]


def test_disable_scale_in():
    rules = Rules(min=1, max=10, evaluation_periods=1, scale_in_evaluation_periods=1,
                  disable_scale_in=True)
    scaler = GroupScaler(rules, {"cpu": 50})
    assert feed(scaler, 0, [1, 1, 1], Capacity(5, 0)) == [None] * 3
    assert feed(scaler, 30, [100], Capacity(5, 0), instances=5) == \
        [Decision(Direction.OUT, "cpu", 100, 50, 5, 10)]


def test_several_policies_out_if_any_to_the_largest():
    scaler = GroupScaler(RULES, {"cpu": 70, "requests_per_target": 1000})
    decision = None
    for step in range(3):
        decision = scaler.evaluate(step * 10, {"cpu": Reading(80, 4),  # 4.57 → 5
                                               "requests_per_target": Reading(1600, 4)},  # 6.4 → 7
                                   Capacity(4, 0))
    assert decision == Decision(Direction.OUT, "requests_per_target", 1600, 1000, 4, 7)


def test_one_policy_over_target_is_enough_to_scale_out():
    scaler = GroupScaler(RULES, {"cpu": 70, "requests_per_target": 1000})
    decision = None
    for step in range(3):
        decision = scaler.evaluate(step * 10, {"cpu": Reading(20, 4),
                                               "requests_per_target": Reading(1300, 4)},
                                   Capacity(4, 0))
    assert decision == Decision(Direction.OUT, "requests_per_target", 1300, 1000, 4, 6)


def test_scale_in_only_when_all_policies_agree():
    scaler = GroupScaler(RULES, {"cpu": 70, "requests_per_target": 1000})
    decisions = [scaler.evaluate(step * 10, {"cpu": Reading(10, 8),
                                             "requests_per_target": Reading(950, 8)},
                                 Capacity(8, 0)) for step in range(6)]
    assert decisions == [None] * 6  # 950 is not under 900: requests do not agree
    scaler = GroupScaler(RULES, {"cpu": 70, "requests_per_target": 1000})
    decisions = [scaler.evaluate(step * 10, {"cpu": Reading(10, 8),  # 8 × 10 / 70 → 2
                                             "requests_per_target": Reading(500, 8)},  # → 4
                                 Capacity(8, 0)) for step in range(5)]
    # The largest desired wins: scale in to 4, not to 2.
    assert decisions[-1] == Decision(Direction.IN, "requests_per_target", 500, 1000, 8, 4)


def test_a_policy_without_data_vetoes_scale_in_but_not_scale_out():
    scaler = GroupScaler(RULES, {"cpu": 70, "requests_per_target": 1000})
    decisions = [scaler.evaluate(step * 10, {"cpu": Reading(10, 8)}, Capacity(8, 0))
                 for step in range(6)]
    assert decisions == [None] * 6
    decisions = [scaler.evaluate(100 + step * 10, {"cpu": Reading(140, 8)}, Capacity(8, 0))
                 for step in range(3)]
    assert decisions[-1] == Decision(Direction.OUT, "cpu", 140, 70, 8, 16)


def test_backlog_grows_a_group_from_zero():
    rules = Rules(min=0, max=10, evaluation_periods=1, scale_in_evaluation_periods=2,
                  scale_out_cooldown=0, scale_in_cooldown=0)
    scaler = GroupScaler(rules, {"backlog_per_worker": 5})
    # 23 visible messages, nobody running: read as 23 over one → ceil(23 / 5) = 5.
    assert scaler.evaluate(0, {"backlog_per_worker": Reading(23, 1)}, Capacity(0, 0)) == \
        Decision(Direction.OUT, "backlog_per_worker", 23, 5, 0, 5)
    assert scaler.evaluate(10, {"backlog_per_worker": Reading(0, 5)}, Capacity(5, 0)) is None
    assert scaler.evaluate(20, {"backlog_per_worker": Reading(0, 5)}, Capacity(5, 0)) == \
        Decision(Direction.IN, "backlog_per_worker", 0, 5, 5, 0)


def test_at_max_there_is_nothing_to_scale_out():
    scaler = GroupScaler(RULES, {"cpu": 70})
    assert feed(scaler, 0, [100] * 3, Capacity(20, 0), instances=20) == [None] * 3


def test_activity_history_is_bounded_and_newest_first():
    history = ActivityHistory(length=2)
    for step in range(3):
        decision = Decision(Direction.OUT, "cpu", 90.0, 70.0, step + 1, step + 2)
        history.record(ScalingActivity.of(1000.0 + step, "pool", "web", decision))
    entries = history.newest_first()
    assert [e["to_desired"] for e in entries] == [4, 3]
    assert entries[0]["cause"] == "cpu 90 > target 70: desired 3 → 4"


def test_a_scaler_needs_a_policy():
    with pytest.raises(ValueError, match="at least one policy"):
        GroupScaler(RULES, {})
