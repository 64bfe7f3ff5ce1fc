"""The autoscaler of ``surge up``: every group with a ``scaling`` table gets a datapoint
per policy each ``period``, the pure target-tracking policy decides, and a decision is
applied through the same path as a manual scale (a pool instance starts, is registered
once healthy; scale-in drains, then stops). Every activity is recorded with its cause.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from surge.autoscale.activity import ActivityHistory, ScalingActivity
from surge.autoscale.policy import Capacity, GroupScaler, Reading
from surge.autoscale.rules import rules_of
from surge.config.settings import InstanceCount, ScalingSettings
from surge.supervisor.policy import Kind
from surge.supervisor.readings import ReadingSource, group_members

if TYPE_CHECKING:
    from surge.supervisor.manager import Supervisor

TICK = 1.0  # how often due groups are looked for; each group keeps its own period
GroupKey = tuple[Kind, str]


@dataclass(slots=True)
class _Tracked:
    scaling: ScalingSettings
    bounds: InstanceCount
    scaler: GroupScaler
    next_due: float
    latest: dict[str, Reading | None]


class Autoscaler:
    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self.history = ActivityHistory()
        self._source = ReadingSource(supervisor)
        self._groups: dict[GroupKey, _Tracked] = {}

    def scaled_groups(self) -> dict[GroupKey, tuple[ScalingSettings, InstanceCount]]:
        """Every group with a scaling table, read from the current settings (a reload may
        have changed them)."""
        settings = self._supervisor.settings
        groups: dict[GroupKey, tuple[ScalingSettings, InstanceCount]] = {}
        for name, pool in settings.pools.items():
            if pool.scaling is not None and pool.command:
                groups[(Kind.POOL, name)] = (pool.scaling, pool.instances)
        for name, worker in settings.workers.items():
            if worker.scaling is not None:
                groups[(Kind.WORKER, name)] = (worker.scaling, worker.process_count())
        return groups

    async def run(self) -> None:
        while True:
            try:
                await self.evaluate_due(time.monotonic())
            except Exception as exc:
                # One unreadable datapoint must not end autoscaling for the supervisor's life.
                self._supervisor.log.event("autoscale_failed", level="error", error=repr(exc))
            await asyncio.sleep(TICK)

    async def evaluate_due(self, now: float) -> None:
        configured = self.scaled_groups()
        for key in set(self._groups) - set(configured):
            del self._groups[key]
        self._source.count_requests = any(
            "requests_per_target" in scaling.policy_targets()
            for scaling, _ in configured.values())
        for key, (scaling, bounds) in configured.items():
            tracked = self._groups.get(key)
            if tracked is None or tracked.scaling != scaling or tracked.bounds != bounds:
                # New, or changed by a reload: the datapoints so far were against other rules.
                tracked = _Tracked(scaling, bounds,
                                   GroupScaler(rules_of(scaling, bounds),
                                               scaling.policy_targets()),
                                   now + scaling.period, {})
                self._groups[key] = tracked
            if now >= tracked.next_due and key in self._supervisor.desired:
                tracked.next_due = now + tracked.scaling.period
                await self._evaluate(key, tracked, now)
        self._forget_gone()

    async def _evaluate(self, key: GroupKey, tracked: _Tracked, now: float) -> None:
        kind, group = key
        supervisor = self._supervisor
        members = group_members(list(supervisor.children.values()), kind, group,
                                tracked.scaling.instance_warmup, now)
        readings = await self._source.read(kind, group, tracked.scaling, members, now)
        tracked.latest = readings
        capacity = Capacity(desired=supervisor.desired[key], warming=len(members.warming))
        decision = tracked.scaler.evaluate(now, readings, capacity)
        if decision is None or supervisor.stopping:
            return
        activity = ScalingActivity.of(time.time(), str(kind), group, decision)
        self.history.record(activity)
        supervisor.log.event("autoscaled", kind=str(kind), group=group,
                             direction=activity.direction, policy=activity.policy,
                             value=activity.value, target=activity.target,
                             desired_from=activity.from_desired,
                             desired_to=activity.to_desired, cause=activity.cause)
        supervisor.resize(kind, group, decision.to_desired)

    def _forget_gone(self) -> None:
        children = self._supervisor.children.values()
        self._source.forget_gone(
            {c.name for c in children},
            {c.spec.address for c in children if c.spec and c.spec.address})

    def describe(self, kind: Kind, group: str) -> dict[str, Any] | None:
        """The group's policies and their latest datapoints, for ``/v1/state``."""
        tracked = self._groups.get((kind, group))
        configured = self.scaled_groups().get((kind, group))
        if configured is None:
            return None
        scaling = configured[0]
        latest = tracked.latest if tracked else {}
        return {
            "policies": {name: {"target": target, "value": _shown(latest.get(name))}
                         for name, target in scaling.policy_targets().items()},
            "period": scaling.period,
            "instance_warmup": scaling.instance_warmup,
            "disable_scale_in": scaling.disable_scale_in,
        }


def _shown(reading: Reading | None) -> float | None:
    return None if reading is None else round(reading.value, 2)
