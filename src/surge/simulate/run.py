"""The simulation clock: load → model → metrics → policy engine → fleet, step by step.

Every ``step`` seconds the model turns the profile's load and the instances in service into
throughput, latency (or backlog) and CPU. Every ``period`` (the scaling table's) the
averages of the period become one datapoint per policy, measured — as on AWS — over the
instances in service and past their warmup; the same ``GroupScaler`` that ``surge up`` runs
decides, and the fleet starts or stops instances. A started instance serves only after
``boot_time`` (its health check passing); one scaled in stops serving at once (drained).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from surge.autoscale.policy import Capacity, GroupScaler, Reading
from surge.autoscale.rules import rules_of
from surge.config.settings import InstanceCount, ScalingSettings
from surge.simulate.model import pool_step, worker_step
from surge.simulate.profile import LoadProfile

# Policies the model can produce a datapoint for; gauges are the application's own.
POOL_POLICIES: tuple[str, ...] = ("cpu", "requests_per_target")
WORKER_POLICIES: tuple[str, ...] = ("backlog_per_worker",)


@dataclass(frozen=True, slots=True)
class PoolModel:
    capacity_per_instance: float  # requests/s one instance completes at 100 % CPU
    service_time: float  # seconds per request when not queued
    think_time: float  # seconds a client waits between an answer and its next request


@dataclass(frozen=True, slots=True)
class WorkerModel:
    tasks_per_second_per_worker: float


@dataclass(slots=True)
class Fleet:
    """Start times of the instances, oldest first."""

    boot_time: float
    warmup: float
    started: list[float] = field(default_factory=list)

    @property
    def desired(self) -> int:
        return len(self.started)

    def serving(self, now: float) -> int:
        return sum(1 for t in self.started if now >= t + self.boot_time)

    def measured(self, now: float) -> int:
        """In service and past warmup: the instances a datapoint is taken over."""
        return sum(1 for t in self.started if now >= t + max(self.boot_time, self.warmup))

    def warming(self, now: float) -> int:
        return self.desired - self.measured(now)

    def resize(self, desired: int, now: float) -> None:
        while len(self.started) < desired:
            self.started.append(now)
        del self.started[desired:]  # the newest go first: the oldest are warm


@dataclass(slots=True)
class Timeline:
    """What the chart and the summary show, one entry per step."""

    times: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)  # requests/s or tasks/s
    latency: list[float] = field(default_factory=list)  # seconds (task wait for workers)
    backlog: list[float] = field(default_factory=list)
    desired: list[int] = field(default_factory=list)
    serving: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    activities: list[str] = field(default_factory=list)


def simulated_targets(scaling: ScalingSettings, modelled: tuple[str, ...]) -> dict[str, float]:
    """The policies the model can feed; a gauge left in would block every scale-in
    (all policies must agree), so it is left out — and said so by the caller."""
    return {name: target for name, target in scaling.policy_targets().items()
            if name in modelled}


def simulate_pool(profile: LoadProfile, model: PoolModel, scaling: ScalingSettings,
                  bounds: InstanceCount, *, boot_time: float, step: float = 1.0) -> Timeline:
    scaler = GroupScaler(rules_of(scaling, bounds), simulated_targets(scaling, POOL_POLICIES))
    fleet = Fleet(boot_time, scaling.instance_warmup)
    fleet.resize(bounds.desired, -max(boot_time, scaling.instance_warmup))  # warm at start
    timeline = Timeline()
    period_cpu: list[float] = []
    period_throughput: list[float] = []
    next_datapoint = scaling.period
    now = 0.0
    while now <= profile.duration + 1e-9:
        clients = profile.load_at(now)
        serving = fleet.serving(now)
        state = pool_step(clients, serving, model.capacity_per_instance, model.service_time,
                          model.think_time)
        _record(timeline, now, clients, state.throughput, state.latency, 0.0, fleet, serving,
                state.cpu_percent)
        period_cpu.append(state.cpu_percent)
        period_throughput.append(state.throughput)
        if now + 1e-9 >= next_datapoint:
            measured = fleet.measured(now)
            readings: dict[str, Reading | None] = {"cpu": None, "requests_per_target": None}
            if measured > 0:
                readings["cpu"] = Reading(sum(period_cpu) / len(period_cpu), measured)
                per_minute = 60.0 * sum(period_throughput) / len(period_throughput)
                readings["requests_per_target"] = Reading(per_minute / max(serving, 1), measured)
            _decide(scaler, fleet, timeline, now, readings)
            period_cpu.clear()
            period_throughput.clear()
            next_datapoint += scaling.period
        now += step
    return timeline


def simulate_workers(profile: LoadProfile, model: WorkerModel, scaling: ScalingSettings,
                     bounds: InstanceCount, *, boot_time: float, step: float = 1.0) -> Timeline:
    scaler = GroupScaler(rules_of(scaling, bounds), simulated_targets(scaling, WORKER_POLICIES))
    fleet = Fleet(boot_time, scaling.instance_warmup)
    fleet.resize(bounds.desired, -max(boot_time, scaling.instance_warmup))
    timeline = Timeline()
    backlog = 0.0
    next_datapoint = scaling.period
    now = 0.0
    while now <= profile.duration + 1e-9:
        arrivals = profile.load_at(now)
        serving = fleet.serving(now)
        state = worker_step(backlog, arrivals, serving, model.tasks_per_second_per_worker, step)
        backlog = state.backlog
        busy = 100.0 * min(1.0, state.completed / max(
            serving * model.tasks_per_second_per_worker * step, 1e-9)) if serving else 0.0
        _record(timeline, now, arrivals, state.completed / step, state.wait, backlog, fleet,
                serving, busy)
        if now + 1e-9 >= next_datapoint:
            measured = fleet.measured(now)
            # Visible messages ÷ running workers; with none running, the backlog over one.
            reading = Reading(backlog / measured, measured) if measured else Reading(backlog, 1)
            _decide(scaler, fleet, timeline, now, {"backlog_per_worker": reading})
            next_datapoint += scaling.period
        now += step
    return timeline


def _record(timeline: Timeline, now: float, load: float, throughput: float, latency: float,
            backlog: float, fleet: Fleet, serving: int, cpu: float) -> None:
    timeline.times.append(now)
    timeline.load.append(load)
    timeline.throughput.append(throughput)
    timeline.latency.append(latency)
    timeline.backlog.append(backlog)
    timeline.desired.append(fleet.desired)
    timeline.serving.append(serving)
    timeline.cpu.append(cpu)


def _decide(scaler: GroupScaler, fleet: Fleet, timeline: Timeline, now: float,
            readings: dict[str, Reading | None]) -> None:
    capacity = Capacity(fleet.desired, fleet.warming(now))
    decision = scaler.evaluate(now, {k: v for k, v in readings.items() if k in scaler.targets},
                               capacity)
    if decision is None:
        return
    fleet.resize(decision.to_desired, now)
    timeline.activities.append(
        f"{_clock(now)} scale {decision.direction}: {decision.policy} {decision.value:.4g} "
        f"vs target {decision.target:g}, desired {decision.from_desired} → "
        f"{decision.to_desired}")


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes:3d}m{rest:02d}s"


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank); inf stays inf."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]
