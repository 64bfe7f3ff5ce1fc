"""``surge reload`` (the admin API's ``POST /v1/reload``) and SIGHUP: reread the config and
apply it without dropping a request.

Applied live: pool sizes (``instances``), worker process counts (``processes`` or
``instances``), every ``scaling`` table (the autoscaler starts over with the new rules) and
a pool's ``instance_refresh`` and ``start_timeout``.
Applied by an instance refresh (``refresh.py``): a pool's launch settings (``command``,
``workers``, ``directory``, ``env``, ``host``, ``base_port``, ``health_check``). New
instances come up and turn healthy, then old ones drain and stop; a new instance that never
turns healthy fails the reload, and the pool is rolled back to its old settings.
Applied by replacing processes one at a time (each replacement runs before its predecessor
stops): routes, gateway settings and the pool settings the gateways read (limits, timeouts,
balancing: the gateways reread the config file), a worker group's settings.
Everything else (addresses, data directory, backends, queues, supervisor settings, a pool's
fixed ``targets``, new or removed pools and groups) is reported as needing a restart of
``surge up`` and left as it was.

What a reload needs from the supervisor is ``ReloadHost``; the supervisor stays the only
writer of its state. Each reload keeps a ``ReloadReport`` of its steps, which
``GET /v1/reload`` shows and ``surge reload`` follows.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from surge.config.loader import load_settings
from surge.config.settings import PoolSettings, Settings, WorkerSettings
from surge.errors import ConfigError
from surge.supervisor.admin import Busy, NotFound
from surge.supervisor.logs import LogSink
from surge.supervisor.policy import Kind
from surge.supervisor.refresh import PoolFleet, refresh_pool, same_launch

# Pool keys only the supervisor reads; a change of any other key reaches the gateways.
_SUPERVISOR_ONLY = {"command", "directory", "env", "host", "base_port", "start_timeout",
                    "instances", "scaling", "instance_refresh", "targets"}
REPORTS_KEPT = 10


@dataclass
class ReloadPlan:
    applied: Settings  # the settings to run with from now on
    resized: list[str] = field(default_factory=list)  # "pool web: desired 1 → 2"
    refresh_pools: list[str] = field(default_factory=list)  # new launch settings
    restart_gateways: bool = False
    restart_worker_groups: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)  # what surge up must restart for


def plan_reload(old: Settings, new: Settings) -> ReloadPlan:
    """Pure: compare two validated settings; keep the old value wherever a change is unsafe."""
    plan = ReloadPlan(applied=old)
    for key in ("data_dir", "admin", "queue_backend", "result_backend", "queues", "supervisor"):
        if getattr(old, key) != getattr(new, key):
            plan.needs_restart.append(key)
    if old.gateway.listen != new.gateway.listen:
        plan.needs_restart.append("gateway.listen")
    gateway = new.gateway.model_copy(update={"listen": old.gateway.listen})
    if gateway != old.gateway or old.routes != new.routes:
        plan.restart_gateways = True

    pools = _plan_pools(old, new, plan)
    workers = _plan_workers(old, new, plan)
    routes_ok = all(route.proxy is None or route.proxy.pool in pools for route in new.routes)
    plan.applied = old.model_copy(update={
        "gateway": gateway, "routes": new.routes if routes_ok else old.routes,
        "pools": pools, "workers": workers,
    })
    return plan


def _plan_pools(old: Settings, new: Settings, plan: ReloadPlan) -> dict[str, PoolSettings]:
    pools = dict(old.pools)
    for name in sorted(set(old.pools) | set(new.pools)):
        if name not in old.pools or name not in new.pools:
            change = "added" if name in new.pools else "removed"
            plan.needs_restart.append(f"pools.{name} ({change})")
            continue
        before, after = old.pools[name], new.pools[name]
        if before.targets != after.targets:
            plan.needs_restart.append(f"pools.{name}.targets")
            after = after.model_copy(update={"targets": before.targets})
        if before.instances != after.instances:
            plan.resized.append(f"pool {name}: desired {before.instances.desired} → "
                                f"{after.instances.desired} (min {after.instances.min}, "
                                f"max {after.instances.max})")
        if before.scaling != after.scaling:
            plan.resized.append(f"pool {name}: scaling policies updated")
        if after.command and not same_launch(before, after):
            plan.refresh_pools.append(name)
        if _gateway_view(before) != _gateway_view(after):
            plan.restart_gateways = True
        pools[name] = after
    return pools


def _gateway_view(pool: PoolSettings) -> dict[str, Any]:
    return pool.model_dump(exclude=_SUPERVISOR_ONLY)


def _plan_workers(old: Settings, new: Settings, plan: ReloadPlan) -> dict[str, WorkerSettings]:
    workers = dict(old.workers)
    for name in sorted(set(old.workers) | set(new.workers)):
        if name not in old.workers or name not in new.workers:
            change = "added" if name in new.workers else "removed"
            plan.needs_restart.append(f"workers.{name} ({change})")
            continue
        before, after = old.workers[name], new.workers[name]
        if before.queue != after.queue:
            plan.needs_restart.append(f"workers.{name}.queue")
            after = after.model_copy(update={"queue": before.queue})
        workers[name] = after
        if before.process_count() != after.process_count():
            plan.resized.append(f"workers {name}: processes {before.process_count().desired} → "
                                f"{after.process_count().desired}")
        if before.scaling != after.scaling:
            plan.resized.append(f"workers {name}: scaling policies updated")
        live = {"processes": after.processes, "instances": after.instances,
                "scaling": after.scaling}
        if before.model_copy(update=live) != after:
            plan.restart_worker_groups.append(name)
    return workers


def reload_overrides(current: Settings) -> dict[str, object]:
    """What ``surge up`` was told on its command line stays as it was."""
    return {
        "gateway.listen": str(current.gateway.listen),
        "admin.listen": str(current.admin.listen),
        "queue_backend.listen": str(current.queue_backend.listen),
        "data_dir": current.data_dir,
    }


class ReloadHost(PoolFleet, Protocol):
    """What a reload reads from the supervisor and asks it to do."""

    @property
    def settings(self) -> Settings: ...

    @property
    def config_path(self) -> str | None: ...

    @property
    def log(self) -> LogSink: ...

    def apply_settings(self, settings: Settings) -> None:
        """Run with ``settings`` from now on (new instances are launched with them)."""
        ...

    def resize(self, kind: Kind, group: str, desired: int) -> None: ...

    async def replace_group(self, kind: Kind, group: str) -> None: ...


ReloadState = Literal["waiting", "running", "succeeded", "failed", "rejected"]


@dataclass
class ReloadReport:
    id: int
    trigger: str  # "api" or "SIGHUP"
    state: ReloadState = "waiting"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # why it was rejected or failed

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "trigger": self.trigger, "state": self.state,
                "started": self.started, "finished": self.finished,
                "steps": list(self.steps), "problems": list(self.problems)}


class Reloader:
    """Runs reloads one at a time and keeps the reports of the latest few."""

    def __init__(self, host: ReloadHost) -> None:
        self._host = host
        self._lock = asyncio.Lock()
        self._reports: OrderedDict[int, ReloadReport] = OrderedDict()
        self._next_id = 1

    def request(self, trigger: str, *, refuse_if_busy: bool) -> ReloadReport:
        """A new report, for ``run``. A second SIGHUP waits for the running reload (two
        refreshes of the same pool at once could stop a successor before it serves); an API
        caller is told it is busy instead."""
        busy = [r for r in self._reports.values() if r.state in ("waiting", "running")]
        if busy and refuse_if_busy:
            raise Busy(f"reload {busy[0].id} is {busy[0].state}; follow it with "
                       f"GET /v1/reload?id={busy[0].id}")
        report = ReloadReport(self._next_id, trigger)
        self._next_id += 1
        self._reports[report.id] = report
        while len(self._reports) > REPORTS_KEPT:
            self._reports.popitem(last=False)
        return report

    def report(self, reload_id: int | None = None) -> ReloadReport:
        if not self._reports:
            raise NotFound("no reload yet")
        if reload_id is None:
            return next(reversed(self._reports.values()))
        if reload_id not in self._reports:
            raise NotFound(f"no reload {reload_id} (the latest {REPORTS_KEPT} are kept)")
        return self._reports[reload_id]

    async def run(self, report: ReloadReport) -> None:
        async with self._lock:
            report.state = "running"
            try:
                await _Reload(self._host, report).run()
            finally:
                if report.state == "running":  # cancelled: surge up is stopping
                    report.state = "failed"
                    report.problems.append("surge up stopped during the reload")
                report.finished = time.time()


class _Reload:
    """One reload, start to end, writing its steps to the report and the log."""

    def __init__(self, host: ReloadHost, report: ReloadReport) -> None:
        self._host = host
        self._report = report

    def _step(self, message: str, level: str = "info", **fields: Any) -> None:
        self._report.steps.append({"time": time.time(), "level": level, "message": message})
        event = {"info": "reload_applied", "warning": "reload_needs_restart",
                 "error": "reload_failed"}[level]
        self._host.log.event(event, level=level, reload=self._report.id, message=message,
                             **fields)

    async def run(self) -> None:
        host, report = self._host, self._report
        try:
            new = load_settings(host.config_path, reload_overrides(host.settings))
        except ConfigError as exc:
            report.state, report.problems = "rejected", list(exc.problems)
            host.log.event("reload_rejected", level="error", reload=report.id,
                           problems=exc.problems,
                           message="the new configuration is invalid; still running the old one")
            return
        old = host.settings
        plan = plan_reload(old, new)
        host.apply_settings(plan.applied)
        for change in plan.resized:
            self._step(change)
        for key in plan.needs_restart:
            self._step(f"{key} changed: restart surge up to apply it", "warning", key=key)
        if plan.applied == old and not plan.needs_restart:
            self._step("nothing to apply: the configuration is as running")
        self._resize(old, plan.applied)
        for name in plan.refresh_pools:
            await self._refresh(name, old.pools[name], plan.applied.pools[name])
        if plan.restart_gateways:
            self._step("routes/gateway settings: replacing gateways one by one")
            await host.replace_group(Kind.GATEWAY, "gateway")
        for name in plan.restart_worker_groups:
            self._step(f"workers {name}: replacing processes one by one")
            await host.replace_group(Kind.WORKER, name)
        report.state = "failed" if report.problems else "succeeded"
        host.log.event("reloaded", reload=report.id, state=report.state)

    def _resize(self, old: Settings, applied: Settings) -> None:
        for name, pool in applied.pools.items():
            if pool.command and pool.instances != old.pools[name].instances:
                self._host.resize(Kind.POOL, name, pool.instances.desired)
        for name, group in applied.workers.items():
            if group.process_count() != old.workers[name].process_count():
                self._host.resize(Kind.WORKER, name, group.process_count().desired)

    async def _refresh(self, name: str, before: PoolSettings, after: PoolSettings) -> None:
        host = self._host
        refresh = after.instance_refresh
        self._step(f"pool {name}: new launch settings; replacing its instances, keeping "
                   f"{refresh.min_healthy_percentage} % of the desired size healthy and at "
                   f"most {refresh.max_healthy_percentage} % in service")
        outcome = await refresh_pool(host, name, after, self._step)
        if outcome.ok:
            self._step(outcome.message)
            return
        self._report.problems.append(f"pool {name}: {outcome.message}")
        self._step(f"pool {name}: {outcome.message}", "error")
        if host.stopping:
            return
        self._step(f"pool {name}: rolling back to the old settings")
        host.apply_settings(host.settings.model_copy(
            update={"pools": {**host.settings.pools, name: before}}))
        if before.instances != after.instances:
            host.resize(Kind.POOL, name, before.instances.desired)
        rollback = await refresh_pool(host, name, before, self._step)
        if rollback.ok:
            self._step(f"pool {name}: rolled back; every instance runs the old settings")
        else:
            self._report.problems.append(f"pool {name}: rollback failed: {rollback.message}")
            self._step(f"pool {name}: rollback failed: {rollback.message}", "error")
