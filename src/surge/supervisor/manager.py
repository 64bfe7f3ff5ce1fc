"""The supervisor of ``surge up``: brings the children up in order, keeps every group at
its desired size, serves the admin API's actions, and shuts everything down in order.

Shaped like uvicorn's multiprocess supervisor: signals are queued and dispatched to
``handle_<signal>`` methods from the main loop, never acted on inside the signal handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from typing import Any

from surge.config.settings import PoolSettings, Settings
from surge.profiling.nytprof import make_profile_dir
from surge.supervisor.admin import NotFound
from surge.supervisor.autoscaler import Autoscaler
from surge.supervisor.children import Child, ProcessOptions
from surge.supervisor.logs import LogSink
from surge.supervisor.policy import (
    SHUTDOWN_ORDER,
    ChildState,
    InstanceView,
    Kind,
    check_bounds,
    gateway_process_count,
    reconcile,
)
from surge.supervisor.queues import QueueBootstrap
from surge.supervisor.refresh import InstanceStatus
from surge.supervisor.reload import Reloader
from surge.supervisor.specs import (
    ChildSpec,
    LaunchContext,
    gateway_spec,
    pool_instance_spec,
    queue_server_spec,
    worker_spec,
)
from surge.supervisor.targets import TargetTable

TICK = 0.25  # reconciliation and drain expiry; restarts and probes run on their own tasks
FALLBACK_STOP_TIMEOUT = 10.0  # pool instances and the queue server: SIGTERM → SIGKILL after
GroupKey = tuple[Kind, str]


class Supervisor:
    def __init__(self, settings: Settings, ctx: LaunchContext, log: LogSink, *,
                 user: str | None = None, group: str | None = None) -> None:
        self.settings = settings
        self.ctx = ctx
        self.log = log
        self._user = user
        self._group = group
        self.children: dict[str, Child] = {}
        self.desired: dict[GroupKey, int] = {}
        self.targets = TargetTable(list(settings.pools))
        self._targets_changed = asyncio.Event()
        self._signals: asyncio.Queue[int] = asyncio.Queue()
        self._stopping = False
        self._stopped = asyncio.Event()
        self.reloader = Reloader(self)
        self._held: set[GroupKey] = set()  # an instance refresh moves these, not _reconcile
        # The settings each pool instance was launched with, kept for its restarts: an old
        # instance that crashes during a refresh comes back as it was.
        self._launched_with: dict[str, PoolSettings] = {}
        self._exit_code = 0
        self._background: set[asyncio.Task[Any]] = set()
        self.queues = QueueBootstrap(settings, ctx.queue_listen, log)
        # Created now, not once up: it counts requests from the gateways' first lines on.
        self.autoscaler = Autoscaler(self)

    # -- main loop -------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._signals.put_nowait, signum)
        # Signals and ticks are served from the first moment, start-up included: a SIGTERM
        # while a pool is still starting stops everything cleanly.
        self._spawn(self._dispatch_signals())
        self._spawn(self._tick_forever())
        try:
            if await self._start_all():
                self._spawn(self.autoscaler.run())
                await self._stopped.wait()
            elif not self._stopping:
                self._exit_code = 1
        finally:
            await self._shutdown()
            await self.queues.close()
        return self._exit_code

    async def _dispatch_signals(self) -> None:
        while True:
            self._dispatch(await self._signals.get())

    async def _tick_forever(self) -> None:
        while not self._stopping:
            self._tick(time.monotonic())
            await asyncio.sleep(TICK)

    def _dispatch(self, signum: int) -> None:
        handlers = {signal.SIGTERM: self.handle_sigterm, signal.SIGINT: self.handle_sigint,
                    signal.SIGHUP: self.handle_sighup}
        handler = handlers.get(signal.Signals(signum))
        if handler is not None:
            handler()

    def handle_sigterm(self) -> None:
        self.log.event("shutdown_requested", signal="SIGTERM")
        self._request_stop()

    def handle_sigint(self) -> None:
        self.log.event("shutdown_requested", signal="SIGINT")
        self._request_stop()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _request_stop(self) -> None:
        self._stopping = True
        self._stopped.set()

    def handle_sighup(self) -> None:
        self._spawn(self.reloader.run(self.reloader.request("SIGHUP", refuse_if_busy=False)))

    def _tick(self, now: float) -> None:
        for pool, address in self.targets.expire_drained(now):
            self._notify_targets()
            child = self._child_at(pool, address)
            if child is not None:
                self._spawn(self._stop_and_forget(child, FALLBACK_STOP_TIMEOUT))
        for key in self.desired:
            self._reconcile(key)

    # -- start-up --------------------------------------------------------------------------

    async def _start_all(self) -> bool:
        settings = self.settings
        os.makedirs(os.path.join(self.ctx.data_dir, "run"), exist_ok=True)
        if settings.queue_backend.url == "embedded":
            self.desired[(Kind.QUEUE, "queue")] = 1
            self._reconcile((Kind.QUEUE, "queue"))
            if not await self._until_running(Kind.QUEUE, timeout=30.0):
                if not self._stopping:
                    self.log.event("start_failed", level="error",
                                   message="the queue server did not answer /_surge/ping")
                return False
        if not await self.queues.create_configured():
            return False
        for name, pool in settings.pools.items():
            for address in pool.targets:
                self.targets.register(name, address)
            if pool.command:
                self.desired[(Kind.POOL, name)] = pool.instances.desired
                self._reconcile((Kind.POOL, name))
        for name, pool in settings.pools.items():
            if pool.command and pool.instances.desired:
                await self._until_running(Kind.POOL, name=name, timeout=pool.start_timeout)
        self.desired[(Kind.GATEWAY, "gateway")] = self.gateway_count(settings)
        self._reconcile((Kind.GATEWAY, "gateway"))
        for name, worker in settings.workers.items():
            self.desired[(Kind.WORKER, name)] = worker.process_count().desired
            self._reconcile((Kind.WORKER, name))
        await self._until_running(Kind.GATEWAY, timeout=30.0)
        gateways = [c for c in self.children.values() if c.kind == Kind.GATEWAY]
        if gateways and all(c.state == ChildState.FAILED for c in gateways):
            # Typically the port is taken: serving nothing while looking alive helps no one.
            self.log.event("start_failed", level="error",
                           message=f"no gateway process could start on "
                                   f"{settings.gateway.listen}; see the gateway-N lines above")
            return False
        self.log.event("up", admin=self.ctx.admin_url, gateway=str(settings.gateway.listen),
                       queue=str(self.ctx.queue_listen), data_dir=self.ctx.data_dir)
        return True

    @staticmethod
    def gateway_count(settings: Settings) -> int:
        import resource

        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        return gateway_process_count(settings.gateway.processes, settings.gateway.max_connections,
                                     os.cpu_count() or 1, fd_limit)

    async def _until_running(self, kind: Kind, *, name: str | None = None,
                             timeout: float) -> bool:
        """Wait until one child of the group runs; False if none does within ``timeout``
        (or all failed), or a stop was requested meanwhile. An empty group is ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stopping:
            group = [c for c in self.children.values()
                     if c.kind == kind and (name is None or c.group == name)]
            if not group or any(c.state == ChildState.RUNNING for c in group):
                return True
            if all(c.state == ChildState.FAILED for c in group):
                return False
            await asyncio.sleep(0.05)
        return False

    # -- groups ----------------------------------------------------------------------------

    def _reconcile(self, key: GroupKey) -> None:
        if key in self._held:
            return
        kind, group = key
        members = [c for c in self.children.values() if c.kind == kind and c.group == group]
        views = [InstanceView(c.name, c.index, serving=c.state == ChildState.RUNNING,
                              leaving=c.retiring) for c in members]
        plan = reconcile(self.desired[key], views)
        for _ in range(plan.start):
            self._launch(kind, group)
        for name in plan.retire:
            self._retire(self.children[name])

    def _launch(self, kind: Kind, group: str, pool: PoolSettings | None = None) -> Child:
        """Start the next child of a group (the lowest free index); a pool instance with
        ``pool`` settings, or the pool's current ones."""
        used = {c.index for c in self.children.values() if c.kind == kind and c.group == group}
        index = next(i for i in range(1, len(used) + 2) if i not in used)
        name = {Kind.QUEUE: "queue", Kind.GATEWAY: f"gateway-{index}",
                Kind.WORKER: f"worker-{group}-{index}", Kind.POOL: f"{group}-{index}"}[kind]
        start_timeout = 30.0
        if kind == Kind.POOL:
            pool = pool or self.settings.pools[group]
            self._launched_with[name] = pool
            start_timeout = pool.start_timeout
        child = Child(kind, group, index, name, self.settings.supervisor,
                      ProcessOptions(self._user, self._group, start_timeout), self, self.log)
        self.children[name] = child
        child.launch()
        return child

    def _retire(self, child: Child) -> None:
        """Take a child out of service: a serving pool instance drains first."""
        child.retiring = True
        if child.kind == Kind.POOL and child.spec and child.spec.address:
            pool = self.settings.pools[child.group]
            if self.targets.drain(child.group, child.spec.address, time.monotonic(),
                                  pool.deregistration_delay):
                self.log.event("target_draining", pool=child.group, target=child.spec.address,
                               delay=pool.deregistration_delay)
                self._notify_targets()
                return
        self._spawn(self._stop_and_forget(child, self._stop_timeout(child.kind, child.group)))

    async def replace_group(self, kind: Kind, group: str) -> None:
        """Replace every process of a group one at a time, each successor running before
        its predecessor stops, so the group never loses capacity (config reload)."""
        key = (kind, group)
        for old in [c for c in self.children.values() if c.kind == kind and c.group == group]:
            if self._stopping or key not in self.desired:
                return
            old.retiring = True
            self._reconcile(key)
            successors = [c for c in self.children.values()
                          if c.kind == kind and c.group == group and not c.retiring]
            deadline = time.monotonic() + 30.0
            while time.monotonic() < deadline and not self._stopping and not all(
                    c.state in (ChildState.RUNNING, ChildState.FAILED) for c in successors):
                await asyncio.sleep(0.1)
            await self._stop_and_forget(old, self._stop_timeout(kind, group))

    async def _stop_and_forget(self, child: Child, timeout: float) -> None:
        await child.stop(timeout)
        if self.children.get(child.name) is child:
            del self.children[child.name]
            self._launched_with.pop(child.name, None)
        self.log.event("child_stopped", child=child.name)

    def _stop_timeout(self, kind: Kind, group: str) -> float:
        if kind == Kind.GATEWAY:
            return self.settings.gateway.shutdown_timeout + 2
        if kind == Kind.WORKER and group in self.settings.workers:
            return self.settings.workers[group].shutdown_timeout + 2
        return FALLBACK_STOP_TIMEOUT

    def _child_at(self, pool: str, address: str) -> Child | None:
        for child in self.children.values():
            if child.kind == Kind.POOL and child.group == pool and child.spec \
                    and child.spec.address == address:
                return child
        return None

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- ChildHooks ------------------------------------------------------------------------

    def spec_for(self, child: Child) -> ChildSpec:
        if child.kind == Kind.QUEUE:
            return queue_server_spec(self.ctx, self.settings)
        if child.kind == Kind.GATEWAY:
            return gateway_spec(self.ctx, self.settings, child.index)
        if child.kind == Kind.WORKER:
            return worker_spec(self.ctx, self.settings, child.group, child.index)
        pool = self._launched_with.get(child.name) or self.settings.pools[child.group]
        port = pool.base_port + child.index - 1 if pool.base_port else free_port(pool.host)
        if pool.profile:
            make_profile_dir(self.settings.data_dir, child.group, user=self._user,
                             group=self._group)
        return pool_instance_spec(self.settings, child.group, pool, child.index, port)

    def on_ready(self, child: Child) -> None:
        self.log.event("child_ready", child=child.name)
        if child.kind == Kind.POOL and child.spec and child.spec.address and not child.retiring:
            self.targets.register(child.group, child.spec.address)
            self.log.event("target_registered", pool=child.group, target=child.spec.address)
            self._notify_targets()

    def on_down(self, child: Child) -> None:
        if child.kind == Kind.POOL and child.spec and child.spec.address \
                and self.targets.remove(child.group, child.spec.address):
            self.log.event("target_removed", pool=child.group, target=child.spec.address)
            self._notify_targets()

    # -- SupervisorControl (the admin API) -------------------------------------------------

    def targets_snapshot(self) -> dict[str, Any]:
        return self.targets.snapshot()

    async def wait_targets_change(self, known_version: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.targets.version == known_version and not self._stopping:
            event = self._targets_changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await event.wait()
            if time.monotonic() >= deadline:
                return

    def _notify_targets(self) -> None:
        # Wake every waiter, then give later waiters a fresh event to wait on.
        self._targets_changed.set()
        self._targets_changed = asyncio.Event()

    def scale_pool(self, pool: str, desired: object) -> dict[str, Any]:
        if pool not in self.settings.pools:
            raise NotFound(f"no pool named {pool!r}; pools: {sorted(self.settings.pools)}")
        settings = self.settings.pools[pool]
        if not settings.command:
            raise ValueError(f"pool {pool!r} has fixed targets and no command: it cannot scale")
        count = settings.instances
        new = check_bounds(f"pool {pool!r} desired", desired, count.min, count.max)
        self.log.event("scaled", pool=pool, desired=new)
        self.resize(Kind.POOL, pool, new)
        return {"pool": pool, "desired": new}

    def scale_workers(self, group: str, processes: object) -> dict[str, Any]:
        if group not in self.settings.workers:
            raise NotFound(f"no worker group named {group!r}; groups: "
                           f"{sorted(self.settings.workers)}")
        count = self.settings.workers[group].process_count()
        new = check_bounds(f"worker group {group!r} processes", processes, count.min,
                           count.max)
        self.log.event("scaled", workers=group, processes=new)
        self.resize(Kind.WORKER, group, new)
        return {"workers": group, "processes": new}

    def resize(self, kind: Kind, group: str, desired: int) -> None:
        """Hold a group at ``desired`` (manual scale and autoscaler alike): new pool
        instances get traffic once healthy, surplus ones drain before they stop."""
        self.desired[(kind, group)] = desired
        self._reconcile((kind, group))

    def drain_target(self, pool: str, address: str) -> dict[str, Any]:
        if pool not in self.settings.pools:
            raise NotFound(f"no pool named {pool!r}; pools: {sorted(self.settings.pools)}")
        state = self.targets.state_of(pool, address)
        if state is None:
            raise NotFound(f"pool {pool!r} has no target {address!r}; targets: "
                           f"{self.targets.addresses(pool)}")
        if state == "draining":
            return {"pool": pool, "target": address, "state": "draining"}
        child = self._child_at(pool, address)
        if child is not None:
            self._retire(child)
        else:
            self.targets.drain(pool, address, time.monotonic(),
                               self.settings.pools[pool].deregistration_delay)
            self._notify_targets()
        return {"pool": pool, "target": address, "state": "draining",
                "deregistration_delay": self.settings.pools[pool].deregistration_delay}

    async def state(self) -> dict[str, Any]:
        from surge.supervisor.report import build_state

        return await build_state(self)

    def start_reload(self) -> dict[str, Any]:
        report = self.reloader.request("api", refuse_if_busy=True)
        self._spawn(self.reloader.run(report))
        return report.to_json()

    def reload_report(self, reload_id: int | None = None) -> dict[str, Any]:
        return self.reloader.report(reload_id).to_json()

    # -- ReloadHost: what a reload reads and asks for ---------------------------------------

    @property
    def config_path(self) -> str | None:
        return self.ctx.config_path

    def apply_settings(self, settings: Settings) -> None:
        self.settings = settings

    # -- PoolFleet: what an instance refresh reads and asks for -----------------------------

    def pool_instances(self, pool: str) -> list[InstanceStatus]:
        return [InstanceStatus(
            name=c.name,
            settings=self._launched_with.get(c.name) or self.settings.pools[pool],
            serving=c.state == ChildState.RUNNING and c.spec is not None
            and self.targets.state_of(pool, c.spec.address or "") == "active",
            leaving=c.retiring,
            exited=c.restarts > 0 or c.state in (ChildState.BACKOFF, ChildState.FAILED),
            last_exit_code=c.last_exit_code,
        ) for c in self.children.values() if c.kind == Kind.POOL and c.group == pool]

    def desired_instances(self, pool: str) -> int:
        return self.desired.get((Kind.POOL, pool), 0)

    def launch_instance(self, pool: str, settings: PoolSettings) -> str:
        return self._launch(Kind.POOL, pool, settings).name

    def retire_instance(self, name: str) -> None:
        child = self.children.get(name)
        if child is not None and not child.retiring:
            self._retire(child)

    def hold_pool(self, pool: str, held: bool) -> None:
        if held:
            self._held.add((Kind.POOL, pool))
        else:
            self._held.discard((Kind.POOL, pool))

    # -- shutdown --------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        self._stopping = True
        self._notify_targets()  # release long-polling gateways
        deadline = time.monotonic() + self.settings.supervisor.shutdown_timeout
        self.log.event("shutting_down", children=len(self.children))
        for kind in SHUTDOWN_ORDER:
            group = [c for c in self.children.values() if c.kind == kind]
            if not group:
                continue
            remaining = max(1.0, deadline - time.monotonic())
            timeout = min(remaining, max(self._stop_timeout(kind, c.group) for c in group))
            await asyncio.gather(*(c.stop(timeout) for c in group))
            self.log.event("stopped", kind=str(kind), count=len(group))
        for task in list(self._background):
            task.cancel()
        self.log.event("down")


def free_port(host: str) -> int:
    """A port nothing listens on right now (the child binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
