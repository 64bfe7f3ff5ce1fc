"""``surge queue serve``: run the SQS-compatible queue server until SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path

import uvloop

from surge.config.settings import Settings
from surge.httpkit.server import SimpleServer, shutdown_simple_server, start_simple_server
from surge.queue.server.app import QueueApp
from surge.queue.server.broker import Broker
from surge.queue.server.service import QueueService, wall_clock_ms
from surge.queue.server.store import SqliteStore

log = logging.getLogger("surge.queue.server")

DATABASE_NAME = "queue.db"
SHUTDOWN_TIMEOUT = 10.0
# A 1 MiB batch grows when JSON-escaped (up to 6 bytes per character); beyond this, 413.
MAX_REQUEST_BYTES = 8 * 1024 * 1024


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def database_path(settings: Settings) -> Path:
    """``<data_dir>/queue.db``; a relative data_dir is taken from the working directory, as
    ``--data-dir`` on the command line would be."""
    return Path(settings.data_dir).resolve() / DATABASE_NAME


class RunningQueueServer:
    """The server's parts, started and stopped together (also used by tests on port 0)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = SqliteStore(database_path(settings))
        backend = settings.queue_backend
        self.broker = Broker(self.store, account_id=backend.account_id, region=backend.region)
        self.service = QueueService(self.broker, self.store)
        self.server: SimpleServer | None = None
        self.address: tuple[str, int] = (backend.listen.host, backend.listen.port)

    async def start(self) -> None:
        loaded = self.store.restore(self.broker, wall_clock_ms())
        self.store.start()
        self.service.mover.resume(self.store.restore_move_tasks())
        backend = self.settings.queue_backend
        host, port = backend.listen
        app = QueueApp(self.service, access_keys=list(backend.access_keys),
                       default_host=f"{host}:{port}")
        self.server = await start_simple_server(app, host, port, max_body_size=MAX_REQUEST_BYTES)
        bound = self.server.sockets[0].getsockname()
        self.address = (str(bound[0]), int(bound[1]))
        log.info("listening", extra={"fields": {
            "address": f"{bound[0]}:{bound[1]}", "database": str(self.store.path),
            "queues": len(self.broker.queues), "messages": loaded}})

    async def stop(self) -> None:
        """Stop accepting, end long polls, finish requests, commit, close the database."""
        log.info("stopping")
        self.service.stop()
        if self.server is not None:
            await shutdown_simple_server(self.server, SHUTDOWN_TIMEOUT)
        await self.store.close()
        log.info("stopped", extra={"fields": {"commits": self.store.commits}})


async def run_server(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT (exit status 0) or until the database fails (1: memory and
    disk may disagree, so the supervisor must restart us from the database)."""
    running = RunningQueueServer(settings)
    await running.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stopped = loop.create_task(stop.wait())
    failed = loop.create_task(running.store.failure())
    await asyncio.wait((stopped, failed), return_when=asyncio.FIRST_COMPLETED)
    if failed.done():
        log.critical("database failed; exiting so the queue is rebuilt from disk",
                     extra={"fields": {"error": str(failed.result())}})
        stopped.cancel()
        return 1
    failed.cancel()
    await running.stop()
    return 0


def serve(settings: Settings) -> None:
    """Blocking entry point of ``surge queue serve``."""
    _configure_logging()
    sys.exit(uvloop.run(run_server(settings)))
