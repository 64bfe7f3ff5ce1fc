"""``surge gateway``: plan the processes, bind, fork, and in each process serve.

Each process builds its routes (the gateway's own ``/health`` and ``/tasks/``, then the
configured ones in order), runs a ``GatewayServer`` on its listener under uvloop, and on
SIGTERM stops accepting, drains in-flight requests for up to ``shutdown_timeout`` and
exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field

import orjson
import uvloop

from surge.config.settings import Settings
from surge.gateway.errors import TempFileError
from surge.gateway.exchange import RouteHandler
from surge.gateway.http.accesslog import AccessLog
from surge.gateway.http.limits import Limits
from surge.gateway.http.server import GatewayServer
from surge.gateway.process import (
    ProcessGroup,
    bind_listeners,
    plan_processes,
    raise_nofile_limit,
    set_priority,
)
from surge.gateway.routes.enqueue import (
    SEND_DEADLINE,
    EnqueueHandler,
    MessageSender,
    QueuedRecorder,
)
from surge.gateway.routes.health import HEALTH_PATH, HealthHandler
from surge.gateway.routes.router import RouteEntry, Router
from surge.gateway.routes.static import StaticHandler
from surge.gateway.routes.tasks import TASKS_PREFIX, TaskStatusHandler
from surge.gateway.spool import prepare_temp_dir, temp_dir_of
from surge.liveness import heartbeat_file_from_env, touch_forever
from surge.results.interface import ResultStore

log = logging.getLogger("surge.gateway")


def run_gateway(settings: Settings, targets_from: str | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    gateway = settings.gateway
    nofile = raise_nofile_limit()
    refused = set_priority(gateway.priority)
    if refused is not None:  # as nginx does for worker_priority: say so, and serve anyway
        log.warning("gateway.priority = %d not applied: %s; running at nice %d",
                    gateway.priority, refused, os.getpriority(os.PRIO_PROCESS, 0))
    try:  # request bodies and responses wait there when they are large (surge.gateway.spool)
        prepare_temp_dir(temp_dir_of(settings.data_dir))
    except TempFileError as exc:
        log.error("surge gateway: %s", exc)
        return 1
    plan = plan_processes(gateway.processes, gateway.max_connections, os.cpu_count() or 1, nofile)
    listeners = bind_listeners(gateway.listen.host, gateway.listen.port, plan.processes,
                               gateway.backlog)
    port = listeners[0].getsockname()[1]
    print(orjson.dumps({"event": "listening", "port": port, "processes": plan.processes,
                        "connections_per_process": plan.connections_per_process}).decode(),
          flush=True)

    def child_main(slot: int, listener: socket.socket) -> int:
        return uvloop.run(serve_process(settings, targets_from, listener,
                                        plan.connections_per_process))

    return ProcessGroup(listeners, child_main).run()


@dataclass
class Components:
    """What one gateway process opened besides its server, closed in reverse on exit."""

    proxy: object | None = None
    result_store: ResultStore | None = None
    recorder: QueuedRecorder | None = None
    closers: list[object] = field(default_factory=list)


async def serve_process(settings: Settings, targets_from: str | None, listener: socket.socket,
                        max_connections: int) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    components = Components()
    router = Router(await build_routes(settings, targets_from, components))
    server = GatewayServer(Limits.from_settings(settings.gateway, max_connections), router,
                           AccessLog(settings.gateway.access_log))
    await server.start(listener, settings.gateway.backlog)
    heartbeat_file = heartbeat_file_from_env()
    heartbeat = asyncio.ensure_future(touch_forever(heartbeat_file)) if heartbeat_file else None
    # What start-up allocated lives for the whole process: keep it out of every collection.
    gc.collect()
    gc.freeze()
    await stop.wait()
    if heartbeat:
        heartbeat.cancel()
    timeout = settings.gateway.shutdown_timeout
    cut = await server.shutdown(timeout)
    if cut:
        log.warning("shutdown: %d connections cut after %gs", cut, timeout)
    await close_components(components, timeout)
    return 0


async def build_routes(settings: Settings, targets_from: str | None,
                       components: Components) -> list[RouteEntry]:
    store = _open_result_store(settings)
    components.result_store = store
    entries = [
        RouteEntry(HEALTH_PATH, frozenset({"GET", "HEAD"}), HealthHandler(), exact=True),
        RouteEntry(TASKS_PREFIX, frozenset({"GET", "HEAD"}), TaskStatusHandler(store)),
    ]
    sender: MessageSender | None = None
    for route in settings.routes:
        handler: RouteHandler
        if route.proxy is not None:
            if components.proxy is None:
                components.proxy = await _start_proxy(settings, targets_from)
            handler = components.proxy.handler_for(route.proxy)  # type: ignore[attr-defined]
        elif route.enqueue is not None:
            if sender is None:
                sender = _open_sender(settings, components)
                components.recorder = QueuedRecorder(store)
            assert components.recorder is not None
            handler = EnqueueHandler(route.enqueue, sender, components.recorder)
        else:
            assert route.static is not None
            handler = StaticHandler(route.prefix, route.static, settings.config_dir)
        entries.append(RouteEntry(route.prefix, frozenset(m.upper() for m in route.methods),
                                  handler))
    return entries


async def _start_proxy(settings: Settings, targets_from: str | None) -> object:
    from surge.gateway.proxy import ProxyService

    proxy = ProxyService(settings, targets_from)
    await proxy.start()
    return proxy


def _open_sender(settings: Settings, components: Components) -> MessageSender:
    from surge.queue.client import BatchingSender, open_queue_client

    client = open_queue_client(settings.queue_backend)
    sender = BatchingSender(client, deadline=SEND_DEADLINE)
    components.closers.extend([sender, client])
    return sender


def _open_result_store(settings: Settings) -> ResultStore | None:
    from surge.results import open_result_store

    try:
        return open_result_store(settings)
    except Exception as exc:
        log.error("no result store (task status unavailable): %s", exc)
        return None


async def close_components(components: Components, timeout: float) -> None:
    if components.proxy is not None:
        await components.proxy.stop(timeout)  # type: ignore[attr-defined]
    if components.recorder is not None:
        await components.recorder.close()
    for closer in components.closers:
        with contextlib.suppress(Exception):
            await closer.close()  # type: ignore[attr-defined]
    if components.result_store is not None:
        with contextlib.suppress(Exception):
            await components.result_store.close()
    sys.stdout.flush()
