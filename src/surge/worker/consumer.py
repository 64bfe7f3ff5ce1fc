"""The consumer loop: receive, run, settle; heartbeat long tasks; shut down gracefully.

One ``Consumer`` drains one queue in one process:

- it receives (long poll, up to 10) only as many messages as it has free slots, with up to
  ``MAX_RECEIVERS`` receives on the wire at once when the slots allow several full batches;
- each message runs in its own asyncio task: decode → admit (duplicate check, recorded
  ``running``) → handler → settle (batched delete; or ChangeMessageVisibility for a retry;
  or the dead-letter queue);
- a heartbeat extends the visibility of messages still in hand at half-time, and the handler
  is cancelled once ``max_run_time`` has passed;
- ``stop()`` stops receiving; running tasks get ``shutdown_timeout`` to finish, then are
  cancelled and their messages handed back at once (visibility 0).

Policy lives in the hooks and the ``RetryPolicy``; this module only moves messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from surge.envelope import PoisonMessage, decode_envelope
from surge.errors import HandlerError, QueueError, QueueUnavailable
from surge.queue.interface import OutgoingMessage, QueueClient, ReceivedMessage
from surge.worker.backoff import full_jitter_delay
from surge.worker.binding import QueueBinding
from surge.worker.handlers.base import TaskCall, TaskHandler
from surge.worker.heartbeat import HeartbeatAction, HeartbeatPolicy, Lease
from surge.worker.hooks import DeadLetter, HookChain, Job
from surge.worker.retry import DeadLetterNow, LeaveForRedrive, Retry, RetryPolicy
from surge.worker.settle import BatchDeleter
from surge.worker.slots import SQS_MAX_BATCH, Slots

log = logging.getLogger("surge.worker")

DEAD_LETTER_REASON_ATTRIBUTE = "surge.dead-letter-reason"
SOURCE_QUEUE_ATTRIBUTE = "surge.source-queue"
NONEXISTENT_QUEUE_CODES = frozenset(
    {"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"}
)
# Waits after the queue could not be reached, so an outage is not a busy loop.
RECEIVE_ERROR_BACKOFF_BASE = 0.5
RECEIVE_ERROR_BACKOFF_MAX = 10.0
INFRASTRUCTURE_RETRY_FLOOR = 1
MAX_RECEIVERS = 4


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    concurrency: int
    wait_time: float
    max_run_time: float
    shutdown_timeout: float


@dataclass(slots=True)
class InFlight:
    message: ReceivedMessage
    lease: Lease
    task: asyncio.Task[None] | None = None
    handler_running: bool = False


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    finished_in_grace: int
    handed_back: int


class Consumer:
    def __init__(
        self,
        client: QueueClient,
        binding: QueueBinding,
        handlers: Mapping[str, TaskHandler],
        hooks: HookChain,
        retry: RetryPolicy,
        options: ConsumerOptions,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._binding = binding
        self._handlers = handlers
        self._hooks = hooks
        self._retry = retry
        self._options = options
        self._clock = clock
        self._heartbeat = HeartbeatPolicy(binding.visibility_timeout, options.max_run_time)
        self._slots = Slots(options.concurrency)
        self._slot_freed = asyncio.Event()
        self._deleter = BatchDeleter(client, binding.name)
        self._in_flight: dict[str, InFlight] = {}
        self._stopping = False
        self._receivers: list[asyncio.Task[None]] = []

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def stop(self) -> None:
        """Stop receiving (safe to call from a signal handler, and more than once)."""
        if self._stopping:
            return
        self._stopping = True
        for receiver in self._receivers:
            receiver.cancel()

    def receiver_count(self) -> int:
        """Receives kept on the wire at once: one per full batch the free slots can take (up
        to ``MAX_RECEIVERS``), so a fast queue is not drained one round trip at a time."""
        return max(1, min(MAX_RECEIVERS, self._options.concurrency // SQS_MAX_BATCH))

    async def run(self) -> ShutdownReport:
        heartbeat = asyncio.create_task(self._heartbeat_loop())
        self._receivers = [asyncio.create_task(self._receive_loop())
                           for _ in range(self.receiver_count())]
        try:
            await asyncio.gather(*self._receivers)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        finally:
            self._stopping = True
            for receiver in self._receivers:
                receiver.cancel()
            await asyncio.gather(*self._receivers, return_exceptions=True)
        try:
            return await self._drain()
        finally:
            heartbeat.cancel()

    # Receiving

    async def _receive_loop(self) -> None:
        failures = 0
        while not self._stopping:
            size = self._slots.receive_size()
            if size == 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            self._slots.take(size)
            requested_at = self._clock()
            try:
                messages = await self._client.receive(
                    self._binding.name, size, self._options.wait_time,
                    self._binding.receive_visibility,
                )
            except (QueueError, QueueUnavailable) as exc:
                self._slots.give_back(size)
                failures += 1
                delay = min(RECEIVE_ERROR_BACKOFF_MAX, RECEIVE_ERROR_BACKOFF_BASE * 2 ** failures)
                log.warning("receive from %s failed (%s); again in %.1fs",
                            self._binding.name, exc, delay)
                await asyncio.sleep(delay)
                continue
            except BaseException:
                self._slots.give_back(size)
                raise
            failures = 0
            self._slots.give_back(size - len(messages))
            for message in messages:
                self._start(message, requested_at)

    def _start(self, message: ReceivedMessage, requested_at: float) -> None:
        # The visibility clock started when the queue answered, at the latest: counting
        # from the request errs on the safe side.
        lease = Lease(requested_at, requested_at + self._binding.visibility_timeout)
        entry = InFlight(message, lease)
        self._in_flight[message.receipt_handle] = entry
        entry.task = asyncio.create_task(self._process(entry))

    async def _process(self, entry: InFlight) -> None:
        try:
            await self._hooks.on_received(entry.message)
            await self._handle(entry)
        except Exception:
            # A bug or a hook failure past the handler: the message returns after its
            # visibility timeout; the worker keeps going.
            log.exception("message %s: unexpected error", entry.message.message_id)
        finally:
            del self._in_flight[entry.message.receipt_handle]
            self._slots.give_back()
            self._slot_freed.set()
            await self._hooks.on_settled(entry.message)

    # One message

    async def _handle(self, entry: InFlight) -> None:
        message = entry.message
        decoded = decode_envelope(message.body, message.message_id, self._handlers)
        if isinstance(decoded, PoisonMessage):
            await self._dead_letter(DeadLetter(message, decoded.task_id, decoded.task,
                                               decoded.reason))
            return
        job = Job(message, decoded)
        try:
            if not await self._hooks.admit(job):
                await self._hooks.on_duplicate(job)
                await self._deleter.delete(message.receipt_handle)
                return
            await self._hooks.on_start(job)
        except Exception as exc:
            await self._retry_later(job, f"could not start: {exc}")
            return
        result, error, permanent = await self._run_handler(entry, job)
        if error is None:
            try:
                await self._hooks.on_success(job, result)
            except Exception as exc:
                # Unrecorded means unacknowledged: run it again rather than lose the result.
                await self._retry_later(job, f"could not record the result: {exc}")
                return
            await self._deleter.delete(message.receipt_handle)
            return
        await self._settle_failure(job, error, permanent)

    async def _run_handler(self, entry: InFlight, job: Job) -> tuple[Any, str | None, bool]:
        """``(result, error, permanent)``; ``error`` is None on success."""
        handler = self._handlers[job.envelope.task]
        call = TaskCall(job.envelope.id, job.envelope.task, job.envelope.payload, job.attempt)
        remaining = self._options.max_run_time - (self._clock() - entry.lease.started_at)
        time_limit = asyncio.timeout(max(remaining, 0.0))
        entry.handler_running = True
        try:
            async with time_limit:
                return await handler.run(call), None, False
        except TimeoutError as exc:
            if time_limit.expired():
                return None, f"time limit of {self._options.max_run_time:g}s exceeded", False
            return None, f"TimeoutError: {exc}", False
        except HandlerError as exc:
            return None, str(exc), exc.permanent
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}", False
        finally:
            entry.handler_running = False

    async def _settle_failure(self, job: Job, error: str, permanent: bool) -> None:
        decision = self._retry.decide(job.attempt, error, permanent)
        await self._hooks.on_failure(job, error, decision)
        receipt_handle = job.message.receipt_handle
        if isinstance(decision, Retry):
            await self._change_visibility(receipt_handle, decision.delay_seconds)
        elif isinstance(decision, LeaveForRedrive):
            # Visible now: the next receive finds it past maxReceiveCount and redrives it.
            await self._change_visibility(receipt_handle, 0)
        elif isinstance(decision, DeadLetterNow):
            await self._dead_letter(DeadLetter(job.message, job.envelope.id, job.envelope.task,
                                               decision.reason))

    async def _retry_later(self, job: Job, reason: str) -> None:
        """A failure outside the handler (result store down): no attempt is charged to the
        task's record, but the message waits out a backoff before its next delivery, at least
        ``INFRASTRUCTURE_RETRY_FLOOR`` so a short outage does not burn its receive count."""
        delay = max(INFRASTRUCTURE_RETRY_FLOOR, full_jitter_delay(
            job.attempt, self._retry.backoff_base, self._retry.backoff_max, self._retry.uniform))
        log.warning("task %s %s: %s; retry in %ds", job.envelope.task, job.envelope.id, reason,
                    delay)
        await self._change_visibility(job.message.receipt_handle, delay)

    async def _change_visibility(self, receipt_handle: str, seconds: int) -> None:
        try:
            await self._client.change_visibility(self._binding.name, receipt_handle, seconds)
        except (QueueError, QueueUnavailable) as exc:
            # The message comes back when its current visibility runs out anyway.
            log.warning("could not set a message's visibility to %ds: %s", seconds, exc)

    async def _dead_letter(self, dead: DeadLetter) -> None:
        """Send to the dead-letter queue, then delete the original: in that order, so a crash
        in between duplicates the message rather than loses it."""
        message = dead.message
        attributes = dict(message.message_attributes)
        attributes[DEAD_LETTER_REASON_ATTRIBUTE] = {
            "DataType": "String", "StringValue": dead.reason[:1024]}
        attributes[SOURCE_QUEUE_ATTRIBUTE] = {"DataType": "String",
                                              "StringValue": self._binding.name}
        dlq = self._binding.dead_letter_queue
        fifo = dlq.endswith(".fifo")
        outgoing = OutgoingMessage(
            message.body, attributes=attributes,
            group_id=(dead.task or "dead-letters") if fifo else None,
            deduplication_id=message.message_id if fifo else None,
        )
        try:
            await self._send_creating(dlq, outgoing)
        except (QueueError, QueueUnavailable) as exc:
            log.error("message %s could not go to the dead-letter queue %s (%s); it stays on %s",
                      message.message_id, dlq, exc, self._binding.name)
            await self._change_visibility(message.receipt_handle, full_jitter_delay(
                message.receive_count, self._retry.backoff_base, self._retry.backoff_max,
                self._retry.uniform))
            return
        await self._hooks.on_dead_letter(dead)
        await self._deleter.delete(message.receipt_handle)

    async def _send_creating(self, queue: str, message: OutgoingMessage) -> None:
        try:
            await self._client.send(queue, message)
        except QueueError as exc:
            if exc.code not in NONEXISTENT_QUEUE_CODES:
                raise
            # The supervisor creates dead-letter queues; one started by hand may lack it.
            attributes = {"FifoQueue": "true"} if queue.endswith(".fifo") else None
            await self._client.create_queue(queue, attributes)
            await self._client.send(queue, message)

    # Heartbeat

    async def _heartbeat_loop(self) -> None:
        tick = max(0.05, min(1.0, self._binding.visibility_timeout / 4))
        while True:
            await asyncio.sleep(tick)
            now = self._clock()
            due = [entry for entry in self._in_flight.values()
                   if self._heartbeat.decide(entry.lease.started_at, entry.lease.visible_until,
                                             now) is HeartbeatAction.EXTEND]
            for start in range(0, len(due), SQS_MAX_BATCH):
                await self._extend(due[start:start + SQS_MAX_BATCH], now)

    async def _extend(self, entries: list[InFlight], now: float) -> None:
        seconds = self._heartbeat.extension_seconds()
        try:
            failures = await self._client.change_visibility_batch(
                self._binding.name, [(entry.message.receipt_handle, seconds) for entry in entries]
            )
        except (QueueError, QueueUnavailable) as exc:
            log.warning("visibility heartbeat for %d messages failed: %s", len(entries), exc)
            return
        failed = {failure.index for failure in failures}
        for index, entry in enumerate(entries):
            if index not in failed:
                entry.lease.extended(now, seconds)

    # Shutdown

    async def _drain(self) -> ShutdownReport:
        running = [entry.task for entry in self._in_flight.values() if entry.task is not None]
        log.info("stopping: %d tasks in flight, waiting up to %gs", len(running),
                 self._options.shutdown_timeout)
        if running:
            await asyncio.wait(running, timeout=self._options.shutdown_timeout)
        unfinished = [entry for entry in self._in_flight.values() if entry.handler_running]
        for entry in unfinished:
            assert entry.task is not None
            entry.task.cancel()
        # Wait for cancelled handlers to stop (commands are terminated) and settling to end.
        await asyncio.gather(*(entry.task for entry in list(self._in_flight.values())
                               if entry.task is not None), return_exceptions=True)
        await self._hand_back([entry.message for entry in unfinished])
        report = ShutdownReport(len(running) - len(unfinished), len(unfinished))
        log.info("stopped: %d finished during shutdown, %d handed back to the queue",
                 report.finished_in_grace, report.handed_back)
        return report

    async def _hand_back(self, messages: list[ReceivedMessage]) -> None:
        for start in range(0, len(messages), SQS_MAX_BATCH):
            chunk = messages[start:start + SQS_MAX_BATCH]
            try:
                failures = await self._client.change_visibility_batch(
                    self._binding.name, [(message.receipt_handle, 0) for message in chunk])
                for failure in failures:
                    log.warning("could not hand back a message: %s", failure.message)
            except (QueueError, QueueUnavailable) as exc:
                log.warning("could not hand back %d messages (%s): they return after their "
                            "visibility timeout", len(chunk), exc)
            for message in chunk:
                await self._hooks.on_handed_back(message)
