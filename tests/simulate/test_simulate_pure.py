"""The simulator's pure parts: profile, model arithmetic, fleet, timeline, chart."""

import math
import xml.etree.ElementTree as ET

import pytest

from surge.config.settings import InstanceCount, PoolScalingSettings, WorkerScalingSettings
from surge.simulate.chart import Panel, Series, nice_ceiling, render_svg, time_ticks
from surge.simulate.model import pool_step, worker_step
from surge.simulate.profile import ProfileError, parse_profile
from surge.simulate.run import (
    Fleet,
    PoolModel,
    WorkerModel,
    percentile,
    simulate_pool,
    simulate_workers,
)


def test_profile_interpolates_between_points_and_holds_the_last():
    profile = parse_profile("0:0, 10m:50k, 20m:50_000, 22m:0")
    assert profile.times == (0.0, 600.0, 1200.0, 1320.0)
    assert profile.load_at(300) == 25_000
    assert profile.load_at(900) == 50_000
    assert profile.load_at(1260) == 25_000
    assert profile.load_at(10_000) == 0
    assert profile.peak == 50_000 and profile.duration == 1320


@pytest.mark.parametrize(("text", "message"), [
    ("0:0", "at least two points"),
    ("1m:0, 2m:5", "starts at time 0"),
    ("0:0, 5m:1, 2m:3", "must increase"),
    ("0:0, 5x:1", "bad time '5x'"),
    ("0:0, 5m:lots", "bad load 'lots'"),
    ("0:0, 5m:-3", "load must be ≥ 0"),
    ("0:0, 5m", "expected TIME:LOAD"),
])
def test_profile_errors_name_the_bad_part(text, message):
    with pytest.raises(ProfileError, match=message):
        parse_profile(text)


def test_pool_step_below_capacity_answers_in_the_service_time():
    # 1,000 clients thinking 1 s, 50 ms per request: 952.4 req/s, under 4 × 500.
    step = pool_step(1000, 4, 500, 0.05, 1.0)
    assert step.throughput == pytest.approx(1000 / 1.05)
    assert step.latency == pytest.approx(0.05)
    assert step.cpu_percent == pytest.approx(100 * (1000 / 1.05) / 2000)


def test_pool_step_past_capacity_queues_by_littles_law():
    step = pool_step(5000, 4, 500, 0.05, 1.0)  # capacity 2,000 req/s
    assert step.throughput == 2000
    assert step.latency == pytest.approx(5000 / 2000 - 1.0)  # 1.5 s
    assert step.cpu_percent == 100


def test_pool_step_without_instances_never_answers():
    assert math.isinf(pool_step(10, 0, 500, 0.05, 1.0).latency)
    assert pool_step(0, 0, 500, 0.05, 1.0).throughput == 0


def test_worker_step_grows_and_drains_the_backlog():
    step = worker_step(0, 100, 4, 10, 10)  # 1,000 arrive, 400 done
    assert (step.completed, step.backlog, step.wait) == (400, 600, 15.0)
    step = worker_step(600, 0, 4, 10, 10)
    assert (step.completed, step.backlog, step.wait) == (400, 200, 5.0)
    assert math.isinf(worker_step(5, 0, 0, 10, 1).wait)


def test_fleet_boot_and_warmup_and_newest_go_first():
    fleet = Fleet(boot_time=30, warmup=60)
    fleet.resize(2, 0)
    fleet.resize(3, 100)
    assert (fleet.serving(110), fleet.serving(130)) == (2, 3)
    assert (fleet.measured(130), fleet.measured(160)) == (2, 3)
    assert fleet.warming(130) == 1
    fleet.resize(2, 200)
    assert fleet.started == [0, 0]


def test_pool_scales_out_on_cpu_after_the_evaluation_periods():
    # 4 instances of 500 req/s; from t=0, 3,150 req/s are offered (3,300 clients, 1.05 s
    # each): CPU 100 %. Datapoints every 10 s; three over target → at 30 s,
    # desired = ceil(4 × 100 / 70) = 6.
    scaling = PoolScalingSettings(cpu=70, period="10s", instance_warmup="20s",
                                  scale_out_cooldown="0s")
    timeline = simulate_pool(parse_profile("0:3300, 60s:3300"), PoolModel(500, 0.05, 1.0),
                             scaling, InstanceCount(min=2, max=10, desired=4), boot_time=5)
    assert timeline.activities[0].startswith("  0m30s scale out: cpu 100 vs target 70, "
                                             "desired 4 → 6")
    # Each step is recorded before that step's decision: the new size shows from 31 s.
    assert timeline.desired[30] == 4 and timeline.desired[31] == 6
    assert timeline.serving[34] == 4 and timeline.serving[35] == 6  # after boot


def test_pool_scales_in_only_after_the_longer_streak_under_target():
    scaling = PoolScalingSettings(cpu=70, period="10s", scale_in_evaluation_periods=6,
                                  scale_in_cooldown="0s")
    timeline = simulate_pool(parse_profile("0:100, 100s:100"), PoolModel(500, 0.05, 1.0),
                             scaling, InstanceCount(min=2, max=10, desired=4), boot_time=5)
    # 95 req/s over 2,000: 4.8 % CPU; six datapoints under 63 % → at 60 s, to the minimum.
    assert timeline.activities == ["  1m00s scale in: cpu 4.762 vs target 70, desired 4 → 2"]


def test_workers_grow_from_the_backlog_and_come_back_when_it_is_drained():
    scaling = WorkerScalingSettings(backlog_per_worker=5, period="10s", instance_warmup="0s",
                                    scale_in_evaluation_periods=3, scale_in_cooldown="0s",
                                    scale_out_cooldown="0s")
    timeline = simulate_workers(parse_profile("0:20, 30s:20, 31s:0, 5m:0"), WorkerModel(1),
                                scaling, InstanceCount(min=1, max=8, desired=1), boot_time=0)
    assert max(timeline.desired) == 8
    assert timeline.desired[-1] == 1
    assert timeline.backlog[-1] == 0


def test_percentile_is_nearest_rank():
    assert percentile([5, 1, 3, 2, 4], 0.5) == 3
    assert percentile([1, 2, 3, 4], 0.99) == 4
    assert math.isinf(percentile([1, math.inf], 1.0))


def test_chart_axes_and_valid_svg():
    assert [nice_ceiling(v) for v in (0.3, 1, 1.2, 3, 7, 51_000)] == [0.5, 1, 2, 5, 10, 100_000]
    assert time_ticks(2400) == [0, 300, 600, 900, 1200, 1500, 1800, 2100, 2400]
    svg = render_svg("a & b", [0, 60, 120], [
        Panel("Load", "clients", [Series("clients", [0, 10, 5])]),
        Panel("Latency", "s", [Series("latency", [0.1, math.inf, 0.1])]),
        Panel("Instances", "count", [Series("desired", [2, 3, 3], step=True)]),
    ])
    root = ET.fromstring(svg)
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 3
    assert len(lines[2].attrib["points"].split()) == 4  # a step adds its corner
    assert "a &amp; b" in svg
