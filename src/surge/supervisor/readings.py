"""This period's datapoint of every policy of one group, gathered from the running children:
CPU of their process trees, requests per target from the relayed access log, the queue's
visible messages, gauges from Prometheus endpoints. Instances still in warmup are left out
of every metric; a metric that cannot be read is None (no data, no action).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from surge.autoscale.cpu import CpuMeter
from surge.autoscale.gauge import fetch_gauge
from surge.autoscale.policy import Reading
from surge.autoscale.requests import RequestTally, per_minute
from surge.config.settings import ScalingSettings
from surge.errors import SurgeError
from surge.supervisor.children import Child
from surge.supervisor.policy import ChildState, Kind

if TYPE_CHECKING:
    from surge.supervisor.manager import Supervisor

BACKLOG_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Members:
    """A group's instances that are not leaving, split by warmup."""

    in_service: list[Child]
    warming: list[Child]


def group_members(children: list[Child], kind: Kind, group: str, warmup: float,
                  now: float) -> Members:
    in_service: list[Child] = []
    warming: list[Child] = []
    for child in children:
        if child.kind != kind or child.group != group or child.retiring:
            continue
        if child.state == ChildState.STARTING:
            warming.append(child)
        elif child.state == ChildState.RUNNING and child.ready_since is not None:
            (in_service if now - child.ready_since >= warmup else warming).append(child)
    return Members(in_service, warming)


@dataclass(slots=True)
class _RequestSnapshot:
    at: float
    counts: dict[str, int] = field(default_factory=dict)


class ReadingSource:
    """Keeps what the readings need between periods (previous CPU times and request counts)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self.cpu = CpuMeter()
        self.requests = RequestTally()
        self._request_snapshots: dict[str, _RequestSnapshot] = {}
        # Off unless a pool tracks requests_per_target: every proxied request is a line.
        self.count_requests = False
        supervisor.log.observe_lines(self._on_child_lines)

    def _on_child_lines(self, proc: str, stream: str, lines: list[str]) -> None:
        if self.count_requests and stream == "stdout" and proc.startswith("gateway-"):
            self.requests.observe(lines)

    async def read(self, kind: Kind, group: str, scaling: ScalingSettings, members: Members,
                   now: float) -> dict[str, Reading | None]:
        targets = scaling.policy_targets()
        readings: dict[str, Reading | None] = {}
        if "cpu" in targets:
            readings["cpu"] = self._cpu(kind, group, members, now)
        if "requests_per_target" in targets:
            readings["requests_per_target"] = self._requests(group, members, now)
        if "backlog_per_worker" in targets:
            readings["backlog_per_worker"] = await self._backlog(group, members)
        for name, gauge in scaling.gauges.items():
            value = await fetch_gauge(gauge.url, name) if members.in_service else None
            readings[f"gauge:{name}"] = None if value is None else \
                Reading(value, len(members.in_service))
        return readings

    def _cpu(self, kind: Kind, group: str, members: Members, now: float) -> Reading | None:
        cores = 1
        if kind == Kind.POOL:
            # An instance can use one core per pre-forked worker, up to the machine's cores.
            cores = min(self._supervisor.settings.pools[group].workers, os.cpu_count() or 1)
        values = []
        for child in members.in_service + members.warming:
            pid = child.process.pid if child.process else None
            value = None if pid is None else self.cpu.sample(child.name, pid, now, cores)
            if value is not None and child in members.in_service:
                values.append(value)  # warming instances are sampled but not counted
        if not members.in_service or len(values) < len(members.in_service):
            return None  # an instance without a sample yet: an average of the rest misleads
        return Reading(sum(values) / len(values), len(values))

    def _requests(self, pool: str, members: Members, now: float) -> Reading | None:
        counts = self.requests.counts
        addresses = {c.spec.address for c in members.in_service + members.warming
                     if c.spec and c.spec.address}
        previous = self._request_snapshots.get(pool)
        self._request_snapshots[pool] = _RequestSnapshot(
            now, {address: counts[address] for address in addresses})
        in_service = [c.spec.address for c in members.in_service if c.spec and c.spec.address]
        if previous is None or not in_service:
            return None
        served = sum(counts[a] - previous.counts.get(a, 0) for a in in_service)
        rate = per_minute(served, now - previous.at)
        return Reading(rate / len(in_service), len(in_service))

    async def _backlog(self, group: str, members: Members) -> Reading | None:
        queue = self._supervisor.settings.workers[group].queue
        try:
            client = await self._supervisor.queues.client()
            async with asyncio.timeout(BACKLOG_TIMEOUT):
                attributes = await client.get_attributes(queue, ["ApproximateNumberOfMessages"])
            visible = int(attributes["ApproximateNumberOfMessages"])
        except (SurgeError, ImportError, TimeoutError, KeyError, ValueError):
            return None
        running = len(members.in_service)
        # Nobody in service: the whole backlog over one, so an empty group can grow.
        return Reading(visible / running, running) if running else Reading(visible, 1)

    def forget_gone(self, names: set[str], addresses: set[str]) -> None:
        self.cpu.forget_except(names)
        self.requests.forget_except(addresses)
