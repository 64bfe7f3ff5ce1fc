"""A human summary of validated settings, printed by ``surge check-config``."""

from __future__ import annotations

from surge.config.settings import ScalingSettings, Settings
from surge.queue.naming import dead_letter_queue_name


def describe(settings: Settings) -> str:
    lines = [f"gateway   listen {settings.gateway.listen}, processes {settings.gateway.processes}"]
    for name, pool in settings.pools.items():
        count = pool.instances
        lines.append(
            f"pool      {name}: {pool.command or pool.targets} "
            f"(instances {count.min}..{count.max}, desired {count.desired}, workers {pool.workers})"
        )
        if pool.scaling is not None:
            lines.append(f"scaling   pool {name}: {_scaling(pool.scaling)}")
    for route in settings.routes:
        methods = ",".join(route.methods) or "*"
        if route.proxy:
            streamed = [what for what, buffered in (
                ("request bodies", route.proxy.request_buffering),
                ("responses", route.proxy.response_buffering)) if not buffered]
            action = f"proxy → pool {route.proxy.pool}" + (
                f" (streams {' and '.join(streamed)}: a slow client holds a target slot)"
                if streamed else "")
        elif route.enqueue:
            action = f"enqueue → queue {route.enqueue.queue} as task {route.enqueue.task}"
        else:
            action = f"static → {route.static.root if route.static else '?'}"
        lines.append(f"route     {methods} {route.prefix} {action}")
    for name, queue in settings.queues.items():
        dlq = dead_letter_queue_name(name, queue)
        lines.append(
            f"queue     {name}{' (FIFO)' if queue.fifo else ''}: visibility "
            f"{queue.visibility_timeout:g}s, dead-letter {dlq or 'none'}"
        )
    for name, group in settings.workers.items():
        lines.append(
            f"workers   {name}: queue {group.queue}, {group.process_count().desired} process(es) × "
            f"{group.concurrency}, tasks {sorted(group.handlers)}"
        )
        if group.scaling is not None:
            bounds = group.process_count()
            lines.append(f"scaling   workers {name}: processes {bounds.min}..{bounds.max}, "
                         f"{_scaling(group.scaling)}")
    backend = settings.queue_backend
    lines.append(f"queue     backend {backend.url} ({backend.listen})")
    lines.append(f"admin     {settings.admin.listen}")
    return "\n".join(lines)


def _scaling(scaling: ScalingSettings) -> str:
    policies = ", ".join(f"{name} {target:g}" for name, target in scaling.policy_targets().items())
    scale_in = "never" if scaling.disable_scale_in else (
        f"after {scaling.scale_in_evaluation_periods} × {scaling.period:g}s under target")
    return (f"target tracking on {policies}; out after {scaling.evaluation_periods} × "
            f"{scaling.period:g}s over target, in {scale_in}; warmup "
            f"{scaling.instance_warmup:g}s")
