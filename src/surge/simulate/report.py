"""``surge simulate`` as a library function: pick the group, run, print a summary, write the
chart. The CLI only turns options into ``SimulationRequest``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from surge.config.settings import ScalingSettings, Settings
from surge.errors import ConfigError
from surge.simulate.chart import Panel, Series, render_svg
from surge.simulate.profile import LoadProfile
from surge.simulate.run import (
    POOL_POLICIES,
    WORKER_POLICIES,
    PoolModel,
    Timeline,
    WorkerModel,
    percentile,
    simulate_pool,
    simulate_workers,
)


@dataclass(frozen=True, slots=True)
class SimulationRequest:
    profile: LoadProfile
    pool: str | None  # exactly one of pool / workers, or neither: the first group that scales
    workers: str | None
    capacity: float  # requests/s per instance, or tasks/s per worker
    service_time: float
    think_time: float
    boot_time: float
    output: Path


def run_simulation(settings: Settings, request: SimulationRequest,
                   console: Console | None = None) -> Timeline:
    console = console or Console()
    kind, name = _choose_group(settings, request)
    scaling: ScalingSettings
    if kind == "pool":
        pool = settings.pools[name]
        assert pool.scaling is not None
        scaling, bounds, modelled = pool.scaling, pool.instances, POOL_POLICIES
        timeline = simulate_pool(
            request.profile, PoolModel(request.capacity, request.service_time,
                                       request.think_time),
            scaling, bounds, boot_time=request.boot_time)
        load_unit, rate_unit, wait_name = "clients", "requests/s", "response time"
    else:
        group = settings.workers[name]
        assert group.scaling is not None
        scaling, bounds, modelled = group.scaling, group.process_count(), WORKER_POLICIES
        timeline = simulate_workers(request.profile, WorkerModel(request.capacity), scaling,
                                    bounds, boot_time=request.boot_time)
        load_unit, rate_unit, wait_name = "tasks/s arriving", "tasks/s", "queue wait"
    skipped = [p for p in scaling.policy_targets() if p not in modelled]
    if skipped:
        console.print(f"[yellow]not simulated (no model for them): {', '.join(skipped)}[/]")
    simulated = ", ".join(p for p in scaling.policy_targets() if p in modelled)
    request.output.write_text(render_svg(
        f"surge simulate: {kind} {name}, {simulated}",
        timeline.times,
        [Panel("Load", load_unit, [Series(load_unit, timeline.load),
                                   Series(f"served ({rate_unit})", timeline.throughput)]),
         Panel("Instances" if kind == "pool" else "Workers", "count",
               [Series("desired", timeline.desired, step=True),
                Series("in service", timeline.serving, step=True)]),
         Panel(wait_name.capitalize(), "seconds", [Series(wait_name, timeline.latency)])],
    ))
    _print_summary(console, kind, name, request, timeline, wait_name)
    return timeline


def _choose_group(settings: Settings, request: SimulationRequest) -> tuple[str, str]:
    if request.pool is not None:
        pool = settings.pools.get(request.pool)
        if pool is None or pool.scaling is None:
            raise ConfigError([f"--pool {request.pool!r}: not a pool with a [pools.NAME.scaling] "
                               f"table; pools that scale: {_scaling_groups(settings)['pool']}"])
        return "pool", request.pool
    if request.workers is not None:
        group = settings.workers.get(request.workers)
        if group is None or group.scaling is None:
            raise ConfigError([f"--workers {request.workers!r}: not a worker group with a "
                               "[workers.NAME.scaling] table; groups that scale: "
                               f"{_scaling_groups(settings)['worker']}"])
        return "worker", request.workers
    groups = _scaling_groups(settings)
    for kind in ("pool", "worker"):
        if groups[kind]:
            return kind, groups[kind][0]
    raise ConfigError(["no pool or worker group has a scaling table to simulate "
                       "(add [pools.NAME.scaling] with cpu = 70, for instance)"])


def _scaling_groups(settings: Settings) -> dict[str, list[str]]:
    return {"pool": [n for n, p in settings.pools.items() if p.scaling is not None],
            "worker": [n for n, w in settings.workers.items() if w.scaling is not None]}


def _print_summary(console: Console, kind: str, name: str, request: SimulationRequest,
                   timeline: Timeline, wait_name: str) -> None:
    step = timeline.times[1] - timeline.times[0] if len(timeline.times) > 1 else 1.0
    slow_limit = 2 * request.service_time if kind == "pool" else 60.0
    slow_seconds = sum(step for v in timeline.latency if v > slow_limit)
    table = Table(title=f"surge simulate: {kind} {name}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("duration", f"{timeline.times[-1] / 60:.1f} min")
    table.add_row("peak load", f"{max(timeline.load):,.0f}")
    table.add_row("peak desired / in service",
                  f"{max(timeline.desired)} / {max(timeline.serving)}")
    table.add_row("instance-hours", f"{sum(timeline.desired) * step / 3600:.2f}")
    for label, fraction in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
        value = percentile(timeline.latency, fraction)
        table.add_row(f"{wait_name} {label}", _seconds(value))
    table.add_row(f"time with {wait_name} > {_seconds(slow_limit)}", f"{slow_seconds:,.0f} s")
    table.add_row("scaling activities", str(len(timeline.activities)))
    table.add_row("chart", str(request.output))
    console.print(table)
    for line in timeline.activities[:30]:
        console.print(f"  {line}")
    if len(timeline.activities) > 30:
        console.print(f"  … {len(timeline.activities) - 30} more")


def _seconds(value: float) -> str:
    if math.isinf(value):
        return "∞ (nothing in service)"
    return f"{value * 1000:,.0f} ms" if value < 10 else f"{value:,.0f} s"
