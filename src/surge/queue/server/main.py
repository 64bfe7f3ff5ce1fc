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

from surge.config.settings import QueueBackendSettings, Settings
from surge.httpkit.server import (
    ServerLimits,
    SimpleServer,
    shutdown_simple_server,
    start_simple_server,
)
from surge.queue.server.app import QueueApp
from surge.queue.server.broker import Broker
from surge.queue.server.receipts import ReceiptHandles, load_or_create_key
from surge.queue.server.service import QueueService, wall_clock_ms
from surge.queue.server.store import SqliteStore
from surge.queue.sigv4 import Verifier

log = logging.getLogger("surge.queue.server")

DATABASE_NAME = "queue.db"
SHUTDOWN_TIMEOUT = 10.0
# The largest valid request is a batch of 1 MiB of message content (bodies and attributes)
# in the encoding that grows it most: the query protocol percent-encodes every byte of a
# non-ASCII body (3×) and base64 then percent-encoding make a binary attribute up to 4×
# (JSON's \uXXXX escapes make a body at most 3×). Parameter names and entry ids add well
# under 64 KiB. Beyond this, 413 before the body is read.
MAX_REQUEST_BYTES = 4 * 1024 * 1024 + 64 * 1024


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


def queue_url_base(backend: QueueBackendSettings, port: int) -> str:
    """Scheme, host and port of the queue URLs: the configured public URL, else the listen
    address (with the port actually bound; a wildcard address is reached on loopback)."""
    if backend.public_url:
        return backend.public_url.rstrip("/")
    host = backend.listen.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def database_path(settings: Settings) -> Path:
    """``<data_dir>/queue.db``; a relative data_dir is taken from the working directory, as
    ``--data-dir`` on the command line would be."""
    return Path(settings.data_dir).resolve() / DATABASE_NAME


class RunningQueueServer:
    """The server's parts, started and stopped together (also used by tests on port 0)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        backend = settings.queue_backend
        data_dir = Path(settings.data_dir).resolve()
        receipts = ReceiptHandles(load_or_create_key(data_dir))
        self.store = SqliteStore(database_path(settings), reserve_bytes=backend.disk_reserve)
        self.broker = Broker(self.store, account_id=backend.account_id, region=backend.region,
                             receipts=receipts)
        self.service = QueueService(self.broker, self.store)
        self.server: SimpleServer | None = None
        self.address: tuple[str, int] = (backend.listen.host, backend.listen.port)

    async def start(self) -> None:
        loaded = self.store.restore(self.broker, wall_clock_ms())
        self.store.start()
        self.service.mover.resume(self.store.restore_move_tasks())
        backend = self.settings.queue_backend
        host, port = backend.listen
        verifier = None
        if backend.access_keys:
            verifier = Verifier({key.id: key.secret_value() for key in backend.access_keys})
        app = QueueApp(self.service, base_url="", verifier=verifier)
        self.server = await start_simple_server(
            app, host, port, limits=ServerLimits(max_body_size=MAX_REQUEST_BYTES))
        bound = self.server.sockets[0].getsockname()
        self.address = (str(bound[0]), int(bound[1]))
        app.base_url = queue_url_base(backend, self.address[1])
        log.info("listening", extra={"fields": {
            "address": f"{bound[0]}:{bound[1]}", "database": str(self.store.path),
            "queues": len(self.broker.queues), "messages": loaded,
            "queue_urls": app.base_url, "signed": verifier is not None,
            "disk_full": self.store.disk_full}})

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
