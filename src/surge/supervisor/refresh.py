"""Instance refresh of a pool, as an Auto Scaling group does it: every instance launched
with other launch settings (command, workers …) is replaced, one batch at a time, by one
launched with the new settings. A new instance takes traffic once healthy; only then is an
old one drained and stopped, so the pool never has fewer healthy instances than
``min_healthy_percentage`` of its desired size and never more in service or starting than
``max_healthy_percentage`` (at least one more than the minimum, or nothing could move).

A new instance that exits, or is not healthy within the pool's ``start_timeout``, fails the
refresh: what the refresh started and has not proven is stopped, the old instances left are
kept, and the caller rolls back (a refresh to the old settings) what was already replaced.

``refresh_step`` is the decision, pure. ``refresh_pool`` drives it against a ``PoolFleet``,
the narrow view of the supervisor it needs (the supervisor stays the only writer of its
state), and reports each move through ``progress``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from surge.config.settings import PoolSettings

# What an instance is launched with: a change of any of these needs new instances. The
# pool's other keys are read live (sizes, scaling, deregistration delay) or by the gateways.
LAUNCH_FIELDS = frozenset({"command", "workers", "directory", "env", "host", "base_port",
                           "health_check"})
POLL_INTERVAL = 0.1
START_SLACK = 5.0  # past start_timeout, the child itself has killed a silent instance


def same_launch(a: PoolSettings, b: PoolSettings) -> bool:
    return a.model_dump(include=set(LAUNCH_FIELDS)) == b.model_dump(include=set(LAUNCH_FIELDS))


@dataclass(frozen=True, slots=True)
class RefreshBounds:
    floor: int  # healthy instances kept in service throughout
    ceiling: int  # instances in service or starting, at most


def refresh_bounds(desired: int, min_healthy_percentage: int,
                   max_healthy_percentage: int) -> RefreshBounds:
    floor = math.ceil(desired * min_healthy_percentage / 100)
    ceiling = max(floor + 1, desired * max_healthy_percentage // 100)
    return RefreshBounds(floor, ceiling)


@dataclass(frozen=True, slots=True)
class FleetView:
    """The pool's instances that are not leaving, split by launch settings."""

    desired: int
    old_serving: tuple[str, ...]  # old settings, healthy and taking traffic
    old_idle: tuple[str, ...]  # old settings, starting or restarting: nothing to drain
    new_serving: int
    new_starting: int


@dataclass(frozen=True, slots=True)
class RefreshStep:
    launch: int  # new instances to start now
    retire: tuple[str, ...]  # old instances to take out of service now (drain, then stop)
    done: bool


def refresh_step(view: FleetView, bounds: RefreshBounds) -> RefreshStep:
    """The next batch: retire what the healthy count can spare, launch what the ceiling
    allows. Old instances that serve nothing go first; serving ones only as new ones are
    healthy (with a minimum below 100 %, that many before any new one is)."""
    spare = max(0, len(view.old_serving) + view.new_serving - bounds.floor)
    retire = view.old_idle + view.old_serving[:spare]
    in_service = len(view.old_serving) - min(spare, len(view.old_serving)) \
        + view.new_serving + view.new_starting
    wanted = view.desired - view.new_serving - view.new_starting
    launch = max(0, min(wanted, bounds.ceiling - in_service))
    done = (not view.old_serving and not view.old_idle and view.new_starting == 0
            and view.new_serving >= view.desired)
    return RefreshStep(launch, retire, done)


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    name: str
    settings: PoolSettings  # what it was launched with
    serving: bool  # healthy and an active target
    leaving: bool  # draining or stopping
    exited: bool  # exited since it was launched (restarting, or given up on)
    last_exit_code: int | None


class PoolFleet(Protocol):
    """What a refresh needs from the supervisor: to see a pool's instances, launch one with
    given settings, take one out of service, and keep its own reconciliation away meanwhile."""

    @property
    def stopping(self) -> bool: ...

    def pool_instances(self, pool: str) -> list[InstanceStatus]: ...

    def desired_instances(self, pool: str) -> int: ...

    def launch_instance(self, pool: str, settings: PoolSettings) -> str:
        """Start one instance with ``settings``; its name."""
        ...

    def retire_instance(self, name: str) -> None:
        """Drain it (if it serves), then stop it."""
        ...

    def hold_pool(self, pool: str, held: bool) -> None:
        """While held, the supervisor starts and retires none of the pool's instances."""
        ...


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    ok: bool
    message: str
    replaced: int  # old instances taken out of service


async def refresh_pool(fleet: PoolFleet, pool: str, settings: PoolSettings,
                       progress: Callable[[str], None], *,
                       clock: Callable[[], float] = time.monotonic) -> RefreshOutcome:
    """Replace every instance of ``pool`` not launched with ``settings``' launch fields."""
    refresh = settings.instance_refresh
    launched: dict[str, float] = {}  # name → when
    announced: set[str] = set()
    retired: list[str] = []
    fleet.hold_pool(pool, True)
    try:
        while True:
            if fleet.stopping:
                return RefreshOutcome(False, "surge up is stopping", len(retired))
            current = [i for i in fleet.pool_instances(pool) if not i.leaving]
            new = [i for i in current if same_launch(i.settings, settings)]
            failure = _failed_launch(new, launched, settings.start_timeout, clock())
            if failure is not None:
                for instance in new:
                    if instance.name in launched and not instance.serving:
                        fleet.retire_instance(instance.name)
                return RefreshOutcome(False, failure, len(retired))
            for instance in new:
                if instance.serving and instance.name in launched \
                        and instance.name not in announced:
                    announced.add(instance.name)
                    progress(f"{instance.name} is healthy and in service")
            old = [i for i in current if not same_launch(i.settings, settings)]
            view = FleetView(
                desired=fleet.desired_instances(pool),
                old_serving=tuple(i.name for i in old if i.serving),
                old_idle=tuple(i.name for i in old if not i.serving),
                new_serving=sum(1 for i in new if i.serving),
                new_starting=sum(1 for i in new if not i.serving),
            )
            step = refresh_step(view, refresh_bounds(view.desired,
                                                     refresh.min_healthy_percentage,
                                                     refresh.max_healthy_percentage))
            for name in step.retire:
                fleet.retire_instance(name)
                retired.append(name)
                progress(f"{name} (old settings) is draining, then stops")
            for _ in range(step.launch):
                name = fleet.launch_instance(pool, settings)
                launched[name] = clock()
                progress(f"{name} started with the new settings")
            if step.done:
                break
            await asyncio.sleep(POLL_INTERVAL)
        await _until_gone(fleet, pool, retired, progress)
        return RefreshOutcome(not fleet.stopping, f"pool {pool}: {len(retired)} instance(s) "
                                                  f"replaced", len(retired))
    finally:
        fleet.hold_pool(pool, False)


def _failed_launch(new: list[InstanceStatus], launched: dict[str, float],
                   start_timeout: float, now: float) -> str | None:
    for instance in new:
        started = launched.get(instance.name)
        if started is None:
            continue
        if instance.exited:
            code = instance.last_exit_code
            when = "after it turned healthy" if instance.serving else "before it turned healthy"
            return (f"{instance.name} exited {when} (exit code "
                    f"{'none: it could not start' if code is None else code}); its output "
                    f"is in surge up's log")
        if not instance.serving and now - started > start_timeout + START_SLACK:
            return f"{instance.name} did not turn healthy within {start_timeout:g}s"
    return None


async def _until_gone(fleet: PoolFleet, pool: str, retired: list[str],
                      progress: Callable[[str], None]) -> None:
    """Wait for the drained instances to stop (their deregistration delay, then SIGTERM)."""
    waiting = set(retired)
    while waiting and not fleet.stopping:
        # Leaving ones only: once gone, a name may be given to a new instance.
        present = {i.name for i in fleet.pool_instances(pool) if i.leaving}
        for name in sorted(waiting - present):
            progress(f"{name} stopped")
        waiting &= present
        if waiting:
            await asyncio.sleep(POLL_INTERVAL)
