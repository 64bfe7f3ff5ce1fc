"""The document ``GET /v1/state`` answers: processes, pools with their targets, queues with
their depth, worker groups, and the scaling activity history (newest first)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from surge.config.settings import CommandHandler
from surge.supervisor.policy import ChildState, Kind

if TYPE_CHECKING:
    from surge.supervisor.manager import Supervisor


async def build_state(supervisor: Supervisor) -> dict[str, Any]:
    settings = supervisor.settings
    children = list(supervisor.children.values())
    snapshot = supervisor.targets.snapshot()
    pools: dict[str, Any] = {}
    for name, pool in settings.pools.items():
        by_address = {c.spec.address: c for c in children
                      if c.kind == Kind.POOL and c.group == name and c.spec}
        targets = []
        for target in snapshot["pools"].get(name, []):
            child = by_address.get(target["address"])
            targets.append({
                **target,
                "instance": child.name if child else None,
                "healthy": child.healthy if child else None,
            })
        pools[name] = {
            "desired": supervisor.desired.get((Kind.POOL, name), 0),
            "min": pool.instances.min,
            "max": pool.instances.max,
            "instances": sum(1 for c in by_address.values() if not c.retiring),
            "targets": targets,
            "scaling": supervisor.autoscaler.describe(Kind.POOL, name),
            "profile": pool.profile,
        }
    workers: dict[str, Any] = {}
    for name, group in settings.workers.items():
        members = [c for c in children if c.kind == Kind.WORKER and c.group == name]
        bounds = group.process_count()
        workers[name] = {
            "queue": group.queue,
            "desired": supervisor.desired.get((Kind.WORKER, name), 0),
            "running": sum(1 for c in members if c.state == ChildState.RUNNING),
            "concurrency": group.concurrency,
            "min": bounds.min,
            "max": bounds.max,
            "scaling": supervisor.autoscaler.describe(Kind.WORKER, name),
            # task → "nytprof", for `surge profile TASK`
            "profiles": {task: handler.profile for task, handler in group.handlers.items()
                         if isinstance(handler, CommandHandler) and handler.profile},
        }
    return {
        "time": time.time(),
        "admin": supervisor.ctx.admin_url,
        "gateway": {"listen": str(settings.gateway.listen),
                    "processes": supervisor.desired.get((Kind.GATEWAY, "gateway"), 0)},
        "processes": [c.describe() for c in sorted(children, key=_order)],
        "pools": pools,
        "targets_version": snapshot["version"],
        "queues": await supervisor.queues.stats(),
        "workers": workers,
        "scaling_activity": supervisor.autoscaler.history.newest_first(),
    }


def _order(child: Any) -> tuple[int, str, int]:
    kinds = [Kind.QUEUE, Kind.POOL, Kind.GATEWAY, Kind.WORKER]
    return (kinds.index(child.kind), child.group, child.index)
