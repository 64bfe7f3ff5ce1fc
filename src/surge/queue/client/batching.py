"""``BatchingSender``: many concurrent ``send`` calls packed into SendMessageBatch calls.

Each queue has a *lane*: callers wait in it, and batches leave it under two rules, with no
timer anywhere:

* when nothing is in flight, whatever is waiting leaves at the end of the current loop
  iteration — at low load a send costs one call and no added latency;
* while a batch is in flight, the waiting callers leave as soon as ten are waiting (up to
  ``max_in_flight`` batches at once) or when a batch returns, whatever the count.

So the batch size follows the load: the slower the queue answers, the fuller the batches.
Each caller gets its own result, or its own exception: a failed entry raises ``QueueError``
for that caller only; a failed call (``QueueUnavailable``, or a ``QueueError`` for the whole
batch) raises for every caller of that batch and no other. FIFO queues (``.fifo``) keep one
batch in flight so batches cannot overtake each other.

With a ``deadline``, a caller not answered within it gets ``TimeoutError``; its message, if
still waiting in the lane, is then never sent (one already in a batch may still be
stored). One sweep per sender checks the deadlines, not a timer per call: at 10,000 sends
a second, ``asyncio.timeout`` around each one cost more than the batching itself.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field

from surge.errors import QueueError, QueueNotReached, QueueUnavailable
from surge.queue.client.rules import MAX_BATCH_ENTRIES
from surge.queue.interface import OutgoingMessage, QueueClient, SendResult

MAX_BATCH_BYTES = 262144  # SQS's limit on the sum of a batch's message sizes
DEADLINE_SWEEP = 0.1  # seconds between deadline checks: a deadline is kept to within this


@dataclass(slots=True)
class _Waiting:
    message: OutgoingMessage
    result: asyncio.Future[SendResult]
    size: int
    deadline: float = math.inf  # loop time


@dataclass(slots=True)
class _Lane:
    queue: str
    waiting: deque[_Waiting] = field(default_factory=deque)
    in_flight: int = 0
    flush_scheduled: bool = False

    @property
    def max_in_flight_override(self) -> int | None:
        return 1 if self.queue.endswith(".fifo") else None


class BatchingSender:
    def __init__(
        self,
        client: QueueClient,
        *,
        max_in_flight: int = 8,
        max_batch: int = MAX_BATCH_ENTRIES,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        deadline: float | None = None,
    ) -> None:
        self.client = client
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.deadline = deadline
        # Every send with a deadline, in the order of their deadlines (all are now + the
        # same duration); the sweep drops answered ones and fails overdue ones.
        self._timed: deque[_Waiting] = deque()
        self._sweep_armed = False
        self._lanes: dict[str, _Lane] = {}
        self._batches: set[asyncio.Task[None]] = set()
        self.batches_sent = 0
        self.messages_sent = 0

    async def send(self, queue: str, message: OutgoingMessage) -> SendResult:
        lane = self._lanes.get(queue)
        if lane is None:
            lane = self._lanes[queue] = _Lane(queue)
        loop = asyncio.get_running_loop()
        waiting = _Waiting(message, loop.create_future(), _message_size(message))
        if self.deadline is not None:
            waiting.deadline = loop.time() + self.deadline
            self._timed.append(waiting)
            if not self._sweep_armed:
                self._sweep_armed = True
                loop.call_later(DEADLINE_SWEEP, self._sweep)
        lane.waiting.append(waiting)
        if lane.in_flight == 0:
            if not lane.flush_scheduled:
                # Callers arriving in this loop iteration join the same batch.
                lane.flush_scheduled = True
                loop.call_soon(self._scheduled_flush, lane)
        else:
            self._flush(lane)
        return await waiting.result

    async def close(self) -> None:
        """Wait for every batch already accepted to be answered."""
        while self._batches or any(lane.waiting for lane in self._lanes.values()):
            if self._batches:
                await asyncio.wait(set(self._batches))
            else:
                await asyncio.sleep(0)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        timed = self._timed
        while timed and (timed[0].result.done() or timed[0].deadline <= now):
            waiting = timed.popleft()
            if not waiting.result.done():
                waiting.result.set_exception(TimeoutError(
                    f"the queue did not acknowledge within {self.deadline:g}s"))
        if timed:
            loop.call_later(DEADLINE_SWEEP, self._sweep)
        else:
            self._sweep_armed = False

    def _scheduled_flush(self, lane: _Lane) -> None:
        lane.flush_scheduled = False
        self._flush(lane, partial_ok=True)

    def _flush(self, lane: _Lane, partial_ok: bool = False) -> None:
        limit = lane.max_in_flight_override or self.max_in_flight
        while lane.waiting and lane.in_flight < limit:
            self._drop_given_up(lane)
            full = len(lane.waiting) >= self.max_batch
            if not lane.waiting or not (full or partial_ok or lane.in_flight == 0):
                return
            batch = self._take_batch(lane)
            lane.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send_batch(lane, batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
            partial_ok = False  # only one partial batch per opportunity

    def _take_batch(self, lane: _Lane) -> list[_Waiting]:
        batch: list[_Waiting] = []
        size = 0
        while lane.waiting and len(batch) < self.max_batch:
            candidate = lane.waiting[0]
            if batch and size + candidate.size > self.max_batch_bytes:
                break
            lane.waiting.popleft()
            if candidate.result.done():  # its caller gave up (cancelled or timed out)
                continue
            batch.append(candidate)
            size += candidate.size
        return batch

    @staticmethod
    def _drop_given_up(lane: _Lane) -> None:
        while lane.waiting and lane.waiting[0].result.done():
            lane.waiting.popleft()

    async def _send_batch(self, lane: _Lane, batch: list[_Waiting]) -> None:
        try:
            if batch:
                await self._deliver(lane.queue, batch)
        finally:
            lane.in_flight -= 1
            # A returning batch takes whatever is waiting, full or not.
            self._flush(lane, partial_ok=True)

    async def _deliver(self, queue: str, batch: list[_Waiting]) -> None:
        try:
            results, failures = await self.client.send_batch(queue, [w.message for w in batch])
        except QueueError as exc:
            for waiting in batch:
                _fail(waiting, QueueError(exc.code, str(exc), sender_fault=exc.sender_fault), exc)
            return
        except Exception as exc:  # QueueUnavailable, or a backend bug: maybe stored
            # QueueNotReached stays itself: its callers may know that nothing was stored.
            unavailable = QueueNotReached if isinstance(exc, QueueNotReached) else QueueUnavailable
            for waiting in batch:
                _fail(waiting, unavailable(f"SendMessageBatch to {queue}: {exc}"), exc)
            return
        self.batches_sent += 1
        failed_entries = {failure.index: failure for failure in failures}
        for index, waiting in enumerate(batch):
            result = results[index] if index < len(results) else None
            if result is not None:
                self.messages_sent += 1
                if not waiting.result.done():
                    waiting.result.set_result(result)
                continue
            failure = failed_entries.get(index)
            if failure is None:
                error: Exception = QueueUnavailable(f"SendMessageBatch to {queue}: no result")
            else:
                error = QueueError(failure.code, failure.message, sender_fault=failure.sender_fault)
            _fail(waiting, error, None)


def _fail(waiting: _Waiting, error: Exception, cause: BaseException | None) -> None:
    """Each caller gets its own exception object: one shared instance raised in several
    tasks would collect their tracebacks into one."""
    if waiting.result.done():
        return
    error.__cause__ = cause
    waiting.result.set_exception(error)


def _message_size(message: OutgoingMessage) -> int:
    if not message.attributes:
        return len(message.body.encode())
    return len(message.body.encode()) + sum(
        len(name) + sum(len(value) for value in attribute.values())
        for name, attribute in message.attributes.items()
    )
