"""Restart backoff, fast-crash accounting, reconciliation, bounds: pure, exact clocks."""

import pytest

from surge.supervisor.policy import (
    SHUTDOWN_ORDER,
    InstanceView,
    Kind,
    RestartPolicy,
    check_bounds,
    gateway_process_count,
    judge_liveness,
    reconcile,
)


def policy(**overrides):
    values = {"backoff_base": 0.5, "backoff_max": 4.0, "max_fast_crashes": 5,
              "fast_crash_window": 60.0}
    return RestartPolicy(**{**values, **overrides})


def test_backoff_doubles_and_is_capped():
    restarts = policy()
    delays = [restarts.record_crash(now).delay for now in (0, 1, 2, 3)]
    assert delays == [0.5, 1.0, 2.0, 4.0]
    restarts = policy(max_fast_crashes=100)
    assert [restarts.record_crash(t).delay for t in range(8)][-1] == 4.0


def test_gives_up_after_max_fast_crashes_within_window():
    restarts = policy(max_fast_crashes=3)
    assert not restarts.record_crash(0).give_up
    assert not restarts.record_crash(10).give_up
    decision = restarts.record_crash(20)
    assert decision.give_up and decision.recent_crashes == 3


def test_crashes_outside_window_are_forgotten():
    restarts = policy(max_fast_crashes=3, fast_crash_window=60)
    restarts.record_crash(0)
    restarts.record_crash(10)
    decision = restarts.record_crash(100)  # the first two are older than the window
    assert not decision.give_up
    assert decision.recent_crashes == 1
    assert decision.delay == 0.5


def test_reconcile_starts_missing_instances():
    plan = reconcile(3, [InstanceView("web-1", 1, serving=True)])
    assert plan.start == 2 and plan.retire == ()


def test_reconcile_does_not_count_leaving_instances():
    plan = reconcile(1, [InstanceView("web-1", 1, serving=True, leaving=True)])
    assert plan.start == 1


def test_reconcile_retires_unproven_then_newest():
    instances = [
        InstanceView("web-1", 1, serving=True),
        InstanceView("web-2", 2, serving=True),
        InstanceView("web-3", 3, serving=False),
        InstanceView("web-4", 4, serving=True),
    ]
    assert reconcile(2, instances).retire == ("web-3", "web-4")
    assert reconcile(4, instances).retire == ()


def test_shutdown_order_stops_traffic_first_and_queue_last():
    assert SHUTDOWN_ORDER[0] == Kind.GATEWAY
    assert SHUTDOWN_ORDER[-1] == Kind.QUEUE
    assert SHUTDOWN_ORDER.index(Kind.WORKER) < SHUTDOWN_ORDER.index(Kind.QUEUE)


@pytest.mark.parametrize(("requested", "message"), [
    (9, "between 1 and 4, got 9"),
    (0, "between 1 and 4, got 0"),
    ("2", "must be an integer between 1 and 4, got '2'"),
    (True, "must be an integer"),
])
def test_bounds_say_what_is_allowed(requested, message):
    with pytest.raises(ValueError, match=message):
        check_bounds("pool 'web' desired", requested, 1, 4)
    assert check_bounds("x", 3, 1, 4) == 3


def test_liveness_kills_only_after_timeout():
    assert not judge_liveness(last_ok=0, now=19, timeout=20, answered=False).kill
    assert judge_liveness(last_ok=0, now=21, timeout=20, answered=False).kill
    verdict = judge_liveness(last_ok=0, now=100, timeout=20, answered=True)
    assert verdict.healthy and not verdict.kill


def test_gateway_process_count():
    assert gateway_process_count(3, 60000, 2, 20000) == 3
    assert gateway_process_count("auto", 60000, 2, 20000) == 4  # 18,000 per process
    assert gateway_process_count("auto", 1000, 2, 20000) == 2  # at least one per core
