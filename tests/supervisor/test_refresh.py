"""Instance refresh: the batch decision (pure) and its driver against a fake fleet whose
instances turn healthy, fail or crash on command — no processes, no sockets."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from supervisor.fakes import FakeFleet
from surge.config.loader import load_settings
from surge.supervisor.refresh import (
    FleetView,
    RefreshBounds,
    refresh_bounds,
    refresh_pool,
    refresh_step,
    same_launch,
)


def view(desired, old_serving=(), old_idle=(), new_serving=0, new_starting=0):
    return FleetView(desired, tuple(old_serving), tuple(old_idle), new_serving, new_starting)


def test_bounds_follow_the_healthy_percentages():
    assert refresh_bounds(4, 100, 110) == RefreshBounds(floor=4, ceiling=5)  # one extra
    assert refresh_bounds(4, 100, 200) == RefreshBounds(floor=4, ceiling=8)  # all at once
    assert refresh_bounds(4, 50, 100) == RefreshBounds(floor=2, ceiling=4)  # retire first
    assert refresh_bounds(1, 100, 100) == RefreshBounds(floor=1, ceiling=2)  # must move
    assert refresh_bounds(3, 90, 100) == RefreshBounds(floor=3, ceiling=4)  # 2.7 → 3


def test_default_refresh_is_one_new_then_one_old_at_a_time():
    bounds = refresh_bounds(2, 100, 110)
    first = refresh_step(view(2, ["web-1", "web-2"]), bounds)
    assert (first.launch, first.retire, first.done) == (1, (), False)
    # While the new one starts nothing more moves: the ceiling is reached.
    waiting = refresh_step(view(2, ["web-1", "web-2"], new_starting=1), bounds)
    assert (waiting.launch, waiting.retire) == (0, ())
    # Healthy: one old one can go, and the next new one starts in its place.
    second = refresh_step(view(2, ["web-1", "web-2"], new_serving=1), bounds)
    assert (second.launch, second.retire) == (1, ("web-1",))
    last = refresh_step(view(2, ["web-2"], new_serving=2), bounds)
    assert (last.launch, last.retire, last.done) == (0, ("web-2",), False)
    assert refresh_step(view(2, new_serving=2), bounds).done


def test_healthy_count_never_drops_below_the_minimum():
    for desired, low, high in itertools.product(range(1, 7), (0, 50, 90, 100), (100, 110, 200)):
        if high - low > 100:
            continue
        bounds = refresh_bounds(desired, low, high)
        old = [f"old-{i}" for i in range(desired)]
        new_serving = new_starting = 0
        for _ in range(100):  # every new instance turns healthy one step after its launch
            step = refresh_step(view(desired, old, (), new_serving, new_starting), bounds)
            if step.done:
                break
            old = [name for name in old if name not in step.retire]
            new_serving += new_starting
            new_starting = step.launch
            assert len(old) + new_serving >= bounds.floor
            assert len(old) + new_serving + new_starting <= max(bounds.ceiling, desired)
        else:
            pytest.fail(f"no progress for desired={desired} min={low} max={high}")
        assert (old, new_serving) == ([], desired)


def test_old_instances_serving_nothing_go_first():
    step = refresh_step(view(2, ["web-1"], ["web-2"]), refresh_bounds(2, 100, 110))
    assert step.retire == ("web-2",)
    assert step.launch == 2  # web-2 was down: the ceiling of 3 leaves room for two


def test_a_smaller_desired_size_needs_no_new_instance():
    step = refresh_step(view(1, ["web-1", "web-2"], new_serving=1), refresh_bounds(1, 100, 110))
    assert (step.launch, step.retire) == (0, ("web-1", "web-2"))
    assert refresh_step(view(0, ["web-1"]), refresh_bounds(0, 100, 110)).retire == ("web-1",)


def test_launch_settings_are_what_needs_new_instances():
    base = load_settings().pools["web"]
    assert same_launch(base, base.model_copy(update={"instances": base.instances.model_copy(
        update={"desired": 3}), "deregistration_delay": 1.0, "start_timeout": 5.0}))
    assert not same_launch(base, base.model_copy(update={"workers": 8}))
    assert not same_launch(base, base.model_copy(update={"command": base.command + " -v"}))
    assert not same_launch(base, base.model_copy(update={"env": {"A": "1"}}))


# -- the driver, against a fake fleet ------------------------------------------------------
@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr("surge.supervisor.refresh.POLL_INTERVAL", 0.001)


def pools(**refresh):
    old = load_settings(None, {"pools.web.instance_refresh": refresh} if refresh else {})
    before = old.pools["web"]
    return before, before.model_copy(update={"command": before.command + " --new",
                                             "workers": 3})


def run(fleet, settings, **kwargs):
    messages = []
    outcome = asyncio.run(refresh_pool(fleet, "web", settings, messages.append, **kwargs))
    return outcome, messages


def test_replaces_every_instance_keeping_all_healthy():
    before, after = pools()
    fleet = FakeFleet(before, 3)
    outcome, messages = run(fleet, after)
    assert outcome.ok and outcome.replaced == 3
    assert [r["settings"] for r in fleet.instances.values()] == [after] * 3
    assert fleet.fewest_serving >= 3 and fleet.most_in_service <= 4
    assert fleet.held == [True, False]
    assert "web-4 started with the new settings" in messages
    assert "web-4 is healthy and in service" in messages
    assert "web-1 (old settings) is draining, then stops" in messages
    assert messages[-1].endswith("stopped")  # waits until the drained ones are gone
    # Never an old one retired before its replacement was healthy.
    order = [e[:2] for e in fleet.events if e[0] in ("launch", "retire")]
    assert order[:3] == [("launch", "web-4"), ("retire", "web-1"), ("launch", "web-5")]


def test_all_at_once_with_room_for_twice_the_size():
    before, after = pools(min_healthy_percentage=100, max_healthy_percentage=200)
    fleet = FakeFleet(before, 3)
    outcome, _ = run(fleet, after)
    assert outcome.ok
    assert [e[0] for e in fleet.events[:3]] == ["launch"] * 3
    assert fleet.most_in_service == 6


def test_a_new_instance_that_exits_fails_and_keeps_the_old_ones():
    before, after = pools()
    fleet = FakeFleet(before, 2, broken={after.command})
    outcome, _ = run(fleet, after)
    assert not outcome.ok and outcome.replaced == 0
    assert "web-3 exited before it turned healthy (exit code 1)" in outcome.message
    assert fleet.instances["web-3"]["leaving"]  # what the refresh started is stopped
    kept = [n for n, r in fleet.instances.items() if not r["leaving"]]
    assert kept == ["web-1", "web-2"] and all(fleet.instances[n]["serving"] for n in kept)
    assert fleet.held == [True, False]


def test_a_new_instance_never_healthy_times_out():
    before, after = pools()
    after = after.model_copy(update={"start_timeout": 1.0})
    fleet = FakeFleet(before, 1, boot_polls=10**9)
    clock = itertools.count(0.0, 0.5)
    outcome, _ = run(fleet, after, clock=lambda: next(clock))
    assert not outcome.ok
    assert "did not turn healthy within 1s" in outcome.message
    assert [n for n, r in fleet.instances.items() if not r["leaving"]] == ["web-1"]


def test_rollback_is_a_refresh_back_to_the_old_settings():
    before, after = pools()
    fleet = FakeFleet(before, 2)
    assert run(fleet, after)[0].ok
    outcome, _ = run(fleet, before)
    assert outcome.ok and outcome.replaced == 2
    assert [r["settings"] for r in fleet.instances.values()] == [before] * 2


def test_stops_when_surge_up_stops():
    before, after = pools()
    fleet = FakeFleet(before, 2, boot_polls=10**9)
    fleet.stopping = True
    outcome, _ = run(fleet, after)
    assert not outcome.ok and "stopping" in outcome.message
    assert fleet.held == [True, False]
