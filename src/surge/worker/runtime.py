"""One worker group in one process, given its queue client and result store: binds the
queue, builds the handlers and hooks, runs the ``Consumer`` until stopped, cleans up.

Separate from ``main`` (signals, liveness file, forking, opening backends) so tests can run
a whole worker in-process against the memory queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from surge.config.settings import Settings, WorkerSettings
from surge.errors import QueueError, QueueUnavailable
from surge.queue.interface import QueueClient
from surge.results.interface import ResultStore
from surge.worker.binding import QueueBinding, bind_queue
from surge.worker.consumer import Consumer, ConsumerOptions, ShutdownReport
from surge.worker.handlers.base import TaskHandler
from surge.worker.handlers.python import ExecutorPools
from surge.worker.handlers.registry import build_handlers, extend_sys_path, resolved_python_path
from surge.worker.hooks import FailureLogger, HookChain, ResultRecorder, StatsRecorder, WorkerHook
from surge.worker.retry import RetryPolicy
from surge.worker.stats import WorkerStats

log = logging.getLogger("surge.worker")

BIND_RETRY_SECONDS = 1.0


class WorkerRuntime:
    def __init__(
        self,
        settings: Settings,
        group: str,
        client: QueueClient,
        store: ResultStore,
        extra_hooks: list[WorkerHook] | None = None,
    ) -> None:
        self.settings = settings
        self.group = group
        self.worker: WorkerSettings = settings.workers[group]
        self.client = client
        self.store = store
        self.stats = WorkerStats()
        self.hooks: list[WorkerHook] = [
            ResultRecorder(store), StatsRecorder(self.stats), FailureLogger(),
            *(extra_hooks or []),
        ]
        python_path = resolved_python_path(self.worker, settings.config_dir)
        extend_sys_path(python_path)
        self._pools = ExecutorPools(self.worker.concurrency, python_path)
        # Built now: a handler that cannot be imported fails the start, not the first task.
        self.handlers: dict[str, TaskHandler] = build_handlers(
            self.worker, settings.config_dir, self._pools, settings.data_dir
        )
        self._stop_requested = asyncio.Event()
        self._consumer: Consumer | None = None

    def stop(self) -> None:
        self._stop_requested.set()
        if self._consumer is not None:
            self._consumer.stop()

    async def run(self, on_started: Callable[[], None] | None = None) -> ShutdownReport:
        try:
            binding = await self._bind()
            if binding is None:
                return ShutdownReport(0, 0)
            self._consumer = Consumer(
                self.client, binding, self.handlers, HookChain(self.hooks),
                RetryPolicy(self.worker.backoff_base, self.worker.backoff_max,
                            binding.max_receive_count),
                ConsumerOptions(self.worker.concurrency, self.worker.wait_time,
                                self.worker.max_run_time, self.worker.shutdown_timeout),
            )
            log.info("worker %s consuming %s (concurrency %d, visibility %gs, dead letters to "
                     "%s)", self.group, binding.name, self.worker.concurrency,
                     binding.visibility_timeout, binding.dead_letter_queue)
            if on_started is not None:
                on_started()
            if self._stop_requested.is_set():
                self._consumer.stop()
            return await self._consumer.run()
        finally:
            await asyncio.gather(*(handler.close() for handler in self.handlers.values()),
                                 return_exceptions=True)
            self._pools.shutdown()

    async def _bind(self) -> QueueBinding | None:
        """The queue's attributes, waiting for the queue to exist and answer (the supervisor
        may still be creating it). None: stopped while waiting."""
        while not self._stop_requested.is_set():
            try:
                return await bind_queue(self.client, self.worker)
            except (QueueError, QueueUnavailable) as exc:
                log.warning("worker %s: queue %s not ready (%s); retrying", self.group,
                            self.worker.queue, exc)
            try:
                await asyncio.wait_for(self._stop_requested.wait(), BIND_RETRY_SECONDS)
            except TimeoutError:
                pass
        return None
