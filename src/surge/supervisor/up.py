"""``surge up``: resolve what every child must agree on (absolute data directory, addresses),
open the admin API, and run the supervisor until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from surge.admin_token import AdminTokenError, ensure_token
from surge.config.settings import Settings
from surge.config.types import HostPort
from surge.httpkit.server import (
    SimpleRequest,
    SimpleResponse,
    shutdown_simple_server,
    start_simple_server,
)
from surge.supervisor.admin import AdminApi
from surge.supervisor.logs import LogSink
from surge.supervisor.manager import Supervisor, free_port
from surge.supervisor.specs import LaunchContext, connectable


def run_up(settings: Settings, *, config_path: str | None, pid_file: str | None,
           user: str | None, group: str | None) -> int:
    log = LogSink()
    if pid_file:
        Path(pid_file).write_text(f"{os.getpid()}\n")
    try:
        return asyncio.run(_serve(settings, config_path, log, user, group))
    finally:
        if pid_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pid_file)


async def _serve(settings: Settings, config_path: str | None, log: LogSink,
                 user: str | None, group: str | None) -> int:
    data_dir = str(Path(settings.data_dir).resolve())
    queue_listen = settings.queue_backend.listen
    if queue_listen.port == 0:
        queue_listen = HostPort(queue_listen.host, free_port(connectable(queue_listen).host))
    settings = settings.model_copy(update={
        "data_dir": data_dir,
        "queue_backend": settings.queue_backend.model_copy(update={"listen": queue_listen}),
    })

    try:
        token = ensure_token(data_dir)
    except AdminTokenError as exc:
        log.event("start_failed", level="error", message=str(exc))
        return 2

    # The admin API opens first: gateways are told its address when they start.
    api: list[AdminApi] = []

    async def admin_handler(request: SimpleRequest) -> SimpleResponse:
        return await api[0].handle(request)

    admin = settings.admin.listen
    try:
        server = await start_simple_server(admin_handler, admin.host, admin.port)
    except OSError as exc:
        log.event("start_failed", level="error", message=f"admin API cannot listen on {admin}: "
                                                         f"{exc.strerror}")
        return 2
    admin_port = server.sockets[0].getsockname()[1]
    ctx = LaunchContext(
        config_path=str(Path(config_path).resolve()) if config_path else None,
        data_dir=data_dir,
        queue_listen=queue_listen,
        admin_url=f"http://{connectable(HostPort(admin.host, admin_port))}",
        admin_token=token,
    )
    supervisor = Supervisor(settings, ctx, log, user=user, group=group)
    api.append(AdminApi(supervisor, token))
    log.event("starting", admin=ctx.admin_url, config=ctx.config_path or "<embedded default>",
              pid=os.getpid())
    try:
        return await supervisor.run()
    finally:
        await shutdown_simple_server(server, timeout=1.0)
