"""The worker benchmark: surge vs Celery vs Dramatiq, and the Perl handler's two modes.

    .venv/bin/python bench/worker/run.py            # full run (under ~4 minutes)
    .venv/bin/python bench/worker/run.py --quick    # a tenth of the tasks

Each framework gets the same machine, the same two worker processes, the same concurrency
per process and the same workloads: N no-op tasks and M tasks that sleep 10 ms. Each keeps
task results (surge its SQLite result store; Celery and Dramatiq a redis result backend).
The clock runs from the first enqueue until the last result is stored, so a rate is end to
end: enqueue, deliver, run, record, acknowledge. Workers are started and warm before the
clock starts. Celery and Dramatiq use a redis-server started here on a free port; surge its
embedded queue server (``surge queue serve``), also on a free port. Everything stops on its
own; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EXAMPLES_PERL = REPO / "examples" / "perl-legacy"
PYTHON = sys.executable
WORKER_PROCESSES = 2
RUN_TIMEOUT = 120.0  # one workload never takes longer than this, whatever happens


@dataclass(frozen=True)
class Row:
    system: str
    workload: str
    tasks: int
    enqueue_seconds: float
    total_seconds: float  # the measured interval (see ``measure``)
    preloaded: bool = False

    @property
    def rate(self) -> float:
        return self.tasks / self.total_seconds


# Processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(argv: list[str], log: Path, cwd: Path = REPO,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "ab") as log_file:
        return subprocess.Popen(argv, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process group (workers' children too), SIGKILL it if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             interval: float = 0.02) -> None:
    give_up_at = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > give_up_at:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[int]:
    port = free_port()
    process = start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", str(workdir)], workdir / "redis.log")
    try:
        wait_for(lambda: listening(port), 10, "redis-server")
        yield port
    finally:
        stop(process)


@contextlib.contextmanager
def surge_queue_server(workdir: Path) -> Iterator[int]:
    port = free_port()
    process = start([PYTHON, "-m", "surge.cli", "queue", "serve", "--listen",
                     f"127.0.0.1:{port}", "--data-dir", str(workdir / "data")],
                    workdir / "queue-server.log")
    try:
        wait_for(lambda: listening(port), 20, "surge queue serve")
        yield port
    finally:
        stop(process)


# surge


SURGE_CONFIG = """
data_dir = "{data_dir}"

[queue_backend]
url = "embedded"
listen = "127.0.0.1:{port}"

[queues.noop]
[queues.sleep]
[queues.perl_persistent]
[queues.perl_per_task]

[workers.noop]
queue = "noop"
processes = {processes}
concurrency = {concurrency}
wait_time = "1s"
python_path = ["{here}"]
handlers = {{ noop = {{ function = "bench_tasks:noop", executor = "inline" }} }}

[workers.sleep]
queue = "sleep"
processes = {processes}
concurrency = {concurrency}
wait_time = "1s"
python_path = ["{here}"]
handlers = {{ sleep_10ms = "bench_tasks:sleep_10ms" }}

[workers.perl_persistent]
queue = "perl_persistent"
processes = {processes}
concurrency = 4
wait_time = "1s"
[workers.perl_persistent.handlers.process_image]
command = "perl process_image.pl --persistent"
mode = "persistent"
processes = 2
directory = "{perl_dir}"

[workers.perl_per_task]
queue = "perl_per_task"
processes = {processes}
concurrency = 4
wait_time = "1s"
[workers.perl_per_task.handlers.process_image]
command = "perl process_image.pl"
mode = "per-task"
directory = "{perl_dir}"
"""


@dataclass
class Trial:
    """One system running one workload: how to enqueue it, how to start warm workers
    (returns a function that stops them) and how many of its results are stored so far."""

    enqueue: Callable[[], None]
    start_workers: Callable[[], Callable[[], None]]
    completed: Callable[[], int]


def measure(system: str, label: str, count: int, trial: Trial, preloaded: bool) -> Row:
    """End to end: warm workers, then the clock runs from the first enqueue to the last
    result. Preloaded: everything is enqueued first, and the clock runs from the first
    result to the last (the workers' own rate, whatever the producer's)."""
    if preloaded:
        started = time.perf_counter()
        trial.enqueue()
        enqueued = time.perf_counter()
        stop_workers = trial.start_workers()
        try:
            wait_for(lambda: trial.completed() > 0, RUN_TIMEOUT, f"{system} to start",
                     interval=0.02)
            first = time.perf_counter()
            wait_for(lambda: trial.completed() >= count, RUN_TIMEOUT, f"{system} {label}",
                     interval=0.05)
            finished = time.perf_counter()
        finally:
            stop_workers()
        return Row(system, label, count, enqueued - started, finished - first, preloaded)
    stop_workers = trial.start_workers()
    try:
        started = time.perf_counter()
        trial.enqueue()
        enqueued = time.perf_counter()
        wait_for(lambda: trial.completed() >= count, RUN_TIMEOUT, f"{system} {label}",
                 interval=0.05)
        finished = time.perf_counter()
    finally:
        stop_workers()
    return Row(system, label, count, enqueued - started, finished - started, preloaded)


class SurgeBench:
    def __init__(self, workdir: Path, port: int, concurrency: int) -> None:
        self.workdir = workdir
        self.port = port
        self.data_dir = workdir / "data"
        self.config = workdir / "surge.toml"
        self.config.write_text(SURGE_CONFIG.format(
            data_dir=self.data_dir, port=port, processes=WORKER_PROCESSES,
            concurrency=concurrency, here=HERE, perl_dir=EXAMPLES_PERL))

    def run(self, group: str, task: str, payloads: list[object], label: str,
            preloaded: bool = False) -> Row:
        asyncio.run(self._create_queue(group))
        already = self._succeeded(task)  # an earlier workload may share the task name

        def start_workers() -> Callable[[], None]:
            worker = start([PYTHON, "-m", "surge.cli", "worker", "-c", str(self.config), group],
                           self.workdir / f"worker-{group}.log",
                           env={"SURGE_LOG_LEVEL": "WARNING"})
            run_dir = self.data_dir / "run"
            try:
                wait_for(lambda: len(list(run_dir.glob(f"worker-{group}-*.alive")))
                         >= WORKER_PROCESSES, 30, f"{WORKER_PROCESSES} surge workers")
            except BaseException:
                stop(worker)
                raise
            return lambda: stop(worker)

        trial = Trial(lambda: asyncio.run(self._enqueue(group, task, payloads)), start_workers,
                      lambda: self._succeeded(task) - already)
        return measure("surge", label, len(payloads), trial, preloaded)

    async def _create_queue(self, name: str) -> None:
        from surge.queue.client.http import HttpQueueClient

        client = HttpQueueClient(f"http://127.0.0.1:{self.port}")
        try:
            await client.create_queue(f"{name}-dlq")
            arn = f"arn:aws:sqs:us-east-1:000000000000:{name}-dlq"
            await client.create_queue(name, {"RedrivePolicy": orjson.dumps(
                {"deadLetterTargetArn": arn, "maxReceiveCount": 5}).decode()})
        finally:
            await client.close()

    async def _enqueue(self, queue: str, task: str, payloads: list[object]) -> None:
        """As the gateway would: envelopes, sent in batches of 10 by a few concurrent
        senders."""
        import uuid

        from surge.envelope import encode_envelope
        from surge.queue.client.http import HttpQueueClient
        from surge.queue.interface import OutgoingMessage

        client = HttpQueueClient(f"http://127.0.0.1:{self.port}")
        bodies = [encode_envelope(task, payload, str(uuid.uuid4()), time.time(),
                                  str(uuid.uuid4()))
                  for payload in payloads]
        batches = [bodies[i:i + 10] for i in range(0, len(bodies), 10)]

        async def sender(mine: list[list[str]]) -> None:
            for batch in mine:
                await client.send_batch(queue, [OutgoingMessage(body) for body in batch])

        try:
            await asyncio.gather(*(sender(batches[k::8]) for k in range(8)))
        finally:
            await client.close()

    def _succeeded(self, task: str) -> int:
        path = self.data_dir / "results.db"
        if not path.exists():
            return 0
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
            try:
                return int(db.execute("SELECT count(*) FROM tasks WHERE task = ? AND "
                                      "status = 'succeeded'", (task,)).fetchone()[0])
            except sqlite3.OperationalError:
                return 0


# Celery and Dramatiq


def redis_dbsize(port: int, db: int) -> int:
    import redis

    with contextlib.closing(redis.Redis(port=port, db=db)) as client:
        return int(client.dbsize())


def redis_flush(port: int) -> None:
    import redis

    with contextlib.closing(redis.Redis(port=port)) as client:
        client.flushall()


def redis_env(port: int) -> dict[str, str]:
    return {"BENCH_BROKER_URL": f"redis://127.0.0.1:{port}/0",
            "BENCH_RESULT_URL": f"redis://127.0.0.1:{port}/1",
            "PYTHONPATH": str(HERE)}


class CeleryBench:
    def __init__(self, workdir: Path, port: int, concurrency: int) -> None:
        os.environ.update(redis_env(port))
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        import celery_app
        from celery import Celery

        self.app = celery_app.app
        # The producer has no result backend: with one, every delay() would also subscribe
        # to its result's channel, which a fire-and-forget producer never reads.
        self.producer = Celery("producer", broker=os.environ["BENCH_BROKER_URL"])
        self.producer.conf.task_default_queue = "bench"
        self.workdir, self.port, self.concurrency = workdir, port, concurrency

    def run(self, task: str, label: str, count: int, preloaded: bool) -> Row:
        redis_flush(self.port)

        def enqueue() -> None:
            for n in range(count):
                self.producer.send_task(task, args=(n,))

        trial = Trial(enqueue, self._start_workers, lambda: redis_dbsize(self.port, 1))
        return measure("celery", label, count, trial, preloaded)

    def _start_workers(self) -> Callable[[], None]:
        workers = [start([PYTHON, "-m", "celery", "-A", "celery_app", "worker", "-P", "threads",
                          "-c", str(self.concurrency), "-n", f"bench{index}@%h", "-Q", "bench",
                          "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
                         self.workdir / "celery.log", cwd=HERE, env=redis_env(self.port))
                   for index in range(WORKER_PROCESSES)]

        def stop_all() -> None:
            for worker in workers:
                stop(worker)

        try:
            wait_for(lambda: len(self.app.control.ping(timeout=0.5) or []) >=
                     WORKER_PROCESSES, 60, "celery workers")
        except BaseException:
            stop_all()
            raise
        return stop_all


class DramatiqBench:
    def __init__(self, workdir: Path, port: int, concurrency: int) -> None:
        os.environ.update(redis_env(port))
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        import dramatiq_app

        self.actors = dramatiq_app
        self.log = workdir / "dramatiq.log"
        self.port, self.concurrency = port, concurrency

    def run(self, task: str, label: str, count: int, preloaded: bool) -> Row:
        redis_flush(self.port)
        actor = getattr(self.actors, task)

        def enqueue() -> None:
            for n in range(count):
                actor.send(n)

        trial = Trial(enqueue, self._start_workers, lambda: redis_dbsize(self.port, 1))
        return measure("dramatiq", label, count, trial, preloaded)

    def _start_workers(self) -> Callable[[], None]:
        self.log.write_text("")
        worker = start([PYTHON, "-m", "dramatiq", "dramatiq_app", "--processes",
                        str(WORKER_PROCESSES), "--threads", str(self.concurrency)],
                       self.log, cwd=HERE, env=redis_env(self.port))
        try:
            wait_for(lambda: self.log.read_text().count("ready for action") >= WORKER_PROCESSES,
                     60, "dramatiq workers")
        except BaseException:
            stop(worker)
            raise
        return lambda: stop(worker)


# Report

SYSTEMS = ("surge", "celery", "dramatiq")


def print_table(rows: list[Row], concurrency: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"workers: {WORKER_PROCESSES} processes × concurrency {concurrency}, "
                        "results stored")
    for column in ("system", "workload", "clock", "tasks", "enqueue s", "measured s",
                   "tasks/s"):
        table.add_column(column, justify="left" if column in ("system", "workload", "clock")
                         else "right")
    for row in rows:
        clock = "first → last result" if row.preloaded else "enqueue → last result"
        table.add_row(row.system, row.workload, clock, f"{row.tasks:,}",
                      f"{row.enqueue_seconds:.2f}", f"{row.total_seconds:.2f}",
                      f"{row.rate:,.0f}")
    Console(width=120).print(table)
    print("enqueue → last result: end to end, workers warm before the first enqueue.\n"
          "first → last result: the queue was filled first (enqueue s not counted), so the "
          "rate is the workers' own.")
    rates = {(row.system, row.workload, row.preloaded): row.rate for row in rows}
    for workload, preloaded in (("no-op", False), ("sleep 10 ms", False), ("no-op", True)):
        surge = rates.get(("surge", workload, preloaded))
        others = [(name, rates.get((name, workload, preloaded))) for name in SYSTEMS[1:]]
        if surge is None or not any(rate for _, rate in others):
            continue
        ratios = ", ".join(f"surge / {name} = {surge / rate:.2f}×"
                           for name, rate in others if rate)
        mode = "preloaded" if preloaded else "end to end"
        print(f"{workload} ({mode}): {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noop", type=int, default=20_000)
    parser.add_argument("--sleep", type=int, default=2_000)
    parser.add_argument("--perl-persistent", type=int, default=4_000)
    parser.add_argument("--perl-per-task", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=32,
                        help="tasks in flight per worker process (threads for Celery/Dramatiq)")
    parser.add_argument("--quick", action="store_true", help="a tenth of every count")
    parser.add_argument("--no-preloaded", action="store_true",
                        help="skip the preloaded no-op run (the workers' own rate)")
    parser.add_argument("--only", choices=["surge", "celery", "dramatiq", "perl"], nargs="*")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    noop, sleep = args.noop // scale, args.sleep // scale
    # (task, label, count, preloaded)
    workloads = [("noop", "no-op", noop, False), ("sleep_10ms", "sleep 10 ms", sleep, False)]
    if not args.no_preloaded:
        workloads.append(("noop", "no-op", noop, True))
    only = set(args.only or ["surge", "celery", "dramatiq", "perl"])
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="surge-bench-worker-")))
        queue_port = stack.enter_context(surge_queue_server(workdir))
        redis_port = stack.enter_context(redis_server(workdir))
        surge = SurgeBench(workdir, queue_port, args.concurrency)
        surge_groups = {"noop": "noop", "sleep_10ms": "sleep"}
        # Each workload on every system back to back, so a burst of load on this shared
        # machine hits them alike rather than one system's whole run.
        for task, label, count, preloaded in workloads:
            if "surge" in only:
                rows.append(surge.run(surge_groups[task], task, [{"n": n} for n in range(count)],
                                      label, preloaded))
            if "celery" in only:
                rows.append(CeleryBench(workdir, redis_port, args.concurrency).run(
                    task, label, count, preloaded))
            if "dramatiq" in only:
                rows.append(DramatiqBench(workdir, redis_port, args.concurrency).run(
                    task, label, count, preloaded))
        if "perl" in only:
            image = {"width": 64, "height": 48}
            for group, label, count in (("perl_persistent", "perl persistent",
                                         args.perl_persistent),
                                        ("perl_per_task", "perl per-task", args.perl_per_task)):
                rows.append(surge.run(group, "process_image",
                                      [{**image, "seed": n} for n in range(count // scale)],
                                      label))
    order = {name: index for index, name in enumerate(SYSTEMS)}
    rows.sort(key=lambda row: (row.workload.startswith("perl"), row.preloaded, row.workload,
                               order.get(row.system, 9)))
    print_table(rows, args.concurrency)


if __name__ == "__main__":
    main()
