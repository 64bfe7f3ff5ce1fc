"""``surge worker [GROUP]``: run a worker group's processes.

Under ``surge up`` the supervisor starts each process itself and names its liveness file in
``SURGE_HEARTBEAT_FILE``; this process then runs one consumer. Started by hand, it forks
``processes`` copies (one consumer each) and restarts a copy that crashes. Each consumer
touches its liveness file every second (default ``DATA_DIR/run/worker-GROUP-PID.alive``),
stops on SIGTERM or SIGINT, and exits 0 after a clean shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

from surge.config.settings import Settings
from surge.errors import SurgeError
from surge.liveness import HEARTBEAT_FILE_ENV, heartbeat_file_from_env, touch_forever
from surge.worker.runtime import WorkerRuntime

log = logging.getLogger("surge.worker")

LIVENESS_INTERVAL = 1.0
CRASH_RESTART_DELAY = 1.0
EXIT_CONFIG_ERROR = 2


def run_worker_group(settings: Settings, group: str | None) -> int:
    _configure_logging()
    try:
        group = _select_group(settings, group)
    except SurgeError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG_ERROR
    processes = settings.workers[group].processes
    if os.environ.get(HEARTBEAT_FILE_ENV) or processes == 1:
        return run_one_process(settings, group)
    return _run_forked(settings, group, processes)


def _select_group(settings: Settings, group: str | None) -> str:
    if group is None:
        if len(settings.workers) != 1:
            raise SurgeError(
                f"name the worker group to run; the config defines {sorted(settings.workers)}"
            )
        return next(iter(settings.workers))
    if group not in settings.workers:
        raise SurgeError(
            f"no worker group named {group!r}; the config defines {sorted(settings.workers)}"
        )
    return group


def liveness_path(settings: Settings, group: str) -> Path:
    explicit = heartbeat_file_from_env()
    if explicit:
        return explicit
    return Path(settings.data_dir).resolve() / "run" / f"worker-{group}-{os.getpid()}.alive"


def run_one_process(settings: Settings, group: str) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve(settings, group))


async def _serve(settings: Settings, group: str) -> int:
    from surge.queue.client import open_queue_client
    from surge.results import open_result_store

    try:
        client = open_queue_client(settings.queue_backend)
        store = open_result_store(settings)
    except SurgeError as exc:
        log.error("worker %s cannot open its queue or result store: %s", group, exc)
        return EXIT_CONFIG_ERROR
    alive_file = liveness_path(settings, group)
    touching = asyncio.create_task(touch_forever(alive_file, LIVENESS_INTERVAL))
    # Signals first: a SIGTERM while the handlers are still importing is a clean stop too.
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    try:
        try:
            runtime = WorkerRuntime(settings, group, client, store)
        except SurgeError as exc:
            log.error("worker %s cannot start: %s", group, exc)
            return EXIT_CONFIG_ERROR
        stopper = asyncio.create_task(_stop_when_set(stop_requested, runtime))
        await runtime.run()
        stopper.cancel()
        log.info("worker %s (pid %d) exiting: %s", group, os.getpid(), runtime.stats.as_dict())
        return 0
    finally:
        touching.cancel()
        await client.close()
        await store.close()


async def _stop_when_set(stop_requested: asyncio.Event, runtime: WorkerRuntime) -> None:
    await stop_requested.wait()
    runtime.stop()


def _run_forked(settings: Settings, group: str, processes: int) -> int:
    """Fork ``processes`` consumers, forward SIGTERM/SIGINT to them, restart crashed ones."""
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    children: set[int] = set()
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for _ in range(processes):
        children.add(_fork_one(settings, group))
    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if code == EXIT_CONFIG_ERROR:
            failed = True  # a restart would fail the same way
        elif code != 0 and not stopping:
            log.error("worker %s process %d exited with %d; restarting it", group, pid, code)
            time.sleep(CRASH_RESTART_DELAY)
            if not stopping:
                children.add(_fork_one(settings, group))
        elif code != 0:
            failed = True
    return 1 if failed else 0


def _fork_one(settings: Settings, group: str) -> int:
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        code = 1
        try:
            code = run_one_process(settings, group)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=os.environ.get("SURGE_LOG_LEVEL", "INFO"),
            format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        )
