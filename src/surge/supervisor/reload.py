"""SIGHUP: reread the config and apply what is safe to apply live.

Applied live: pool sizes (``instances``), worker process counts (``processes`` or
``instances``), and every ``scaling`` table (the autoscaler starts over with the new rules).
Applied by replacing processes one at a time (each replacement runs before its predecessor
stops): routes and gateway settings (the gateways reread the config file), a worker group's
settings.
Everything else (addresses, data directory, backends, queues, pool commands, new or removed
pools and groups) is logged as needing a restart of ``surge up`` and left as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from surge.config.loader import load_settings
from surge.config.settings import PoolSettings, Settings, WorkerSettings
from surge.errors import ConfigError
from surge.supervisor.policy import Kind

if TYPE_CHECKING:
    from surge.supervisor.manager import Supervisor


@dataclass
class ReloadPlan:
    applied: Settings  # the settings to run with from now on
    resized: list[str] = field(default_factory=list)  # "pool web: desired 1 → 2"
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
        live = {"instances": after.instances, "scaling": after.scaling}
        if before.instances != after.instances:
            plan.resized.append(f"pool {name}: desired {before.instances.desired} → "
                                f"{after.instances.desired} (min {after.instances.min}, "
                                f"max {after.instances.max})")
        if before.scaling != after.scaling:
            plan.resized.append(f"pool {name}: scaling policies updated")
        pools[name] = before.model_copy(update=live)
        if pools[name] != after:
            plan.needs_restart.append(f"pools.{name} (command, environment or checks)")
    return pools


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


async def reload_config(supervisor: Supervisor) -> None:
    log = supervisor.log
    try:
        new = load_settings(supervisor.ctx.config_path, reload_overrides(supervisor.settings))
    except ConfigError as exc:
        log.event("reload_rejected", level="error", problems=exc.problems,
                  message="the new configuration is invalid; still running the old one")
        return
    old = supervisor.settings
    plan = plan_reload(old, new)
    supervisor.settings = plan.applied
    for change in plan.resized:
        log.event("reload_applied", change=change)
    for key in plan.needs_restart:
        log.event("reload_needs_restart", level="warning", key=key,
                  message=f"{key} changed: restart surge up to apply it")
    for name, pool in plan.applied.pools.items():
        if pool.instances != old.pools[name].instances and (Kind.POOL, name) in supervisor.desired:
            supervisor.desired[(Kind.POOL, name)] = pool.instances.desired
    for name, group in plan.applied.workers.items():
        if group.process_count() != old.workers[name].process_count():
            supervisor.desired[(Kind.WORKER, name)] = group.process_count().desired
    if plan.restart_gateways:
        log.event("reload_applied", change="routes/gateway settings: replacing gateways one by one")
        await supervisor.replace_group(Kind.GATEWAY, "gateway")
    for name in plan.restart_worker_groups:
        log.event("reload_applied", change=f"workers {name}: replacing processes one by one")
        await supervisor.replace_group(Kind.WORKER, name)
    log.event("reloaded")
