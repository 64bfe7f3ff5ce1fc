"""The enqueue route: a JSON body becomes a task message on a queue; 202 + task id.

The 202 is sent only after the queue acknowledged the message (``BatchingSender`` packs
concurrent sends into batches). If the queue is unreachable or slower than
``SEND_DEADLINE``, the client gets 503 + Retry-After: the work was not stored, and saying
otherwise would lose it. The ``queued`` record in the result store is written after that
decision, batched, and awaited before the 202 (bounded by ``RECORD_DEADLINE``) so that a
client polling its ``Location`` at once — possibly through another gateway process — finds
the task instead of a 404. A failed record write is logged, not turned into an error: the
task itself is stored, and the worker's record supersedes the queued one anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import orjson

from surge.config.settings import EnqueueRoute
from surge.errors import QueueError, QueueUnavailable
from surge.gateway.errors import BodyTooLarge, InvalidPayload, ServiceUnavailable
from surge.gateway.exchange import Request, ResponseWriter
from surge.gateway.routes.replies import send_json
from surge.ids import random_uuid
from surge.queue.interface import OutgoingMessage, SendResult
from surge.results.interface import ResultStore

log = logging.getLogger(__name__)

SEND_DEADLINE = 5.0  # seconds a client waits for the queue before 503
RECORD_DEADLINE = 1.0  # seconds the 202 waits for the queued record at most
RETRY_AFTER = 2


class MessageSender(Protocol):
    """``BatchingSender`` with ``deadline=SEND_DEADLINE`` (raising ``TimeoutError`` past
    it), or a ``QueueClient`` bounded by its own request timeouts."""

    async def send(self, queue: str, message: OutgoingMessage) -> SendResult: ...


def parse_payload(body: bytes) -> Any:
    """The JSON value of ``body``; ``InvalidPayload`` says where and why it is not JSON."""
    if not body.strip():
        raise InvalidPayload("the request body is empty; expected a JSON document")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidPayload(f"the request body is not valid JSON: {exc}") from None


def build_envelope(task: str, payload: Any, timestamp: float, task_id: str) -> dict[str, Any]:
    return {"task": task, "payload": payload, "timestamp": timestamp, "id": task_id}


class QueuedRecorder:
    """Collects (task_id, task) pairs and writes them with one ``mark_queued`` per loop
    iteration. ``record`` returns the batch's outcome, which never raises: True when the write
    finished (a failure is logged and dropped, as the task itself is already stored), False
    when it took longer than ``deadline`` — one timer per batch, not one per request."""

    def __init__(self, store: ResultStore | None, deadline: float = RECORD_DEADLINE) -> None:
        self.store = store
        self.deadline = deadline
        self._pending: list[tuple[str, str]] = []
        self._pending_write: asyncio.Future[bool] | None = None
        self._writes: set[asyncio.Task[None]] = set()

    def record(self, task_id: str, task: str) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        if self.store is None:
            done: asyncio.Future[bool] = loop.create_future()
            done.set_result(True)
            return done
        if self._pending_write is None:
            self._pending_write = loop.create_future()
            loop.call_soon(self._flush)
        self._pending.append((task_id, task))
        return self._pending_write

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        batch_done, self._pending_write = self._pending_write, None
        if batch and self.store is not None:
            write = asyncio.ensure_future(self._write(self.store, batch))
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)
            if batch_done is not None:
                late = asyncio.get_running_loop().call_later(
                    self.deadline, _resolve, batch_done, False)

                def on_time(_: object, batch_done: asyncio.Future[bool] = batch_done) -> None:
                    late.cancel()
                    _resolve(batch_done, True)

                write.add_done_callback(on_time)
        elif batch_done is not None:
            _resolve(batch_done, True)

    @staticmethod
    async def _write(store: ResultStore, batch: list[tuple[str, str]]) -> None:
        try:
            await store.mark_queued(batch)
        except Exception as exc:
            log.warning("could not record %d queued tasks: %s", len(batch), exc)

    async def close(self) -> None:
        self._flush()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)


def _resolve(future: asyncio.Future[bool], written: bool) -> None:
    if not future.done():
        future.set_result(written)


class EnqueueHandler:
    def __init__(self, route: EnqueueRoute, sender: MessageSender,
                 recorder: QueuedRecorder) -> None:
        self.queue = route.queue
        self.task = route.task
        self.max_body_size = route.max_body_size
        self.sender = sender
        self.recorder = recorder

    async def handle(self, request: Request, response: ResponseWriter) -> None:
        body = await request.body.read_all(self.max_body_size)
        payload = parse_payload(body)
        task_id = random_uuid()
        envelope = build_envelope(self.task, payload, time.time(), task_id)
        message = OutgoingMessage(body=orjson.dumps(envelope).decode())
        try:
            await self.sender.send(self.queue, message)  # the sender keeps SEND_DEADLINE
        except TimeoutError:
            raise ServiceUnavailable("the queue did not acknowledge in time",
                                     RETRY_AFTER) from None
        except QueueUnavailable as exc:
            raise ServiceUnavailable(f"the queue is unavailable: {exc}", RETRY_AFTER) from exc
        except QueueError as exc:
            if exc.code in ("InvalidMessageContents", "MessageTooLong",
                            "InvalidParameterValue"):
                if exc.code == "MessageTooLong":
                    raise BodyTooLarge(f"the queue refused the message: {exc}") from exc
                raise InvalidPayload(f"the queue refused the message: {exc}") from exc
            raise ServiceUnavailable(f"the queue refused the message: {exc}",
                                     RETRY_AFTER) from exc
        # Shielded: the batch's future is shared, and a cancelled handler must not cancel
        # it for the others. It resolves by the recorder's deadline at the latest.
        if not await asyncio.shield(self.recorder.record(task_id, self.task)):
            log.warning("queued record for task %s is late; answering 202 anyway", task_id)
        response.set_log_fields(task_id=task_id)
        await send_json(response, 202, {"id": task_id, "status": "queued"},
                        [(b"location", f"/tasks/{task_id}".encode())])
