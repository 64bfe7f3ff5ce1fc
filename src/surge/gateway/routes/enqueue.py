"""The enqueue route: a JSON body becomes a task message on a queue; 202 + task id.

What each answer promises (docs/enqueue.md says it to users):

- 202 + ``Location: /tasks/<id>``: the task is stored in the queue and its ``queued`` record
  in the result store, so it will run and the first poll of its Location finds it;
- 503 + Retry-After: nothing was stored in the queue (the result store could not record the
  task, so it was never sent; or the queue refused it or could not be reached);
- 504 + Retry-After: the task was sent and the queue did not confirm in time (or the
  connection broke while it answered): it may have been stored, and may run. A retry with
  the same ``Idempotency-Key`` settles it without running the task twice.

Hence the order of writes: first the ``queued`` record (with an Idempotency-Key, the key's
binding to the task id in the same write), then the message. A record whose message was
never stored is harmless: its id was never given out, or its key's retry sends it again.

Idempotency-Key: the same key (per queue and task name, for ``idempotency_key_ttl``) gives
the same task id. A retry answers 202 at once when the queue had confirmed a send of the
task (noted on the key's binding) or a worker has seen it (a status past ``queued``);
otherwise the first send's outcome is unknown, and the task is sent again under the same id
and a new send id. The workers run one of the copies (``surge.results.rules``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from typing import Any, Protocol

import orjson

from surge.config.settings import EnqueueRoute
from surge.envelope import PayloadTooDeep, encode_envelope
from surge.errors import QueueError, QueueNotReached, QueueUnavailable, ResultStoreError
from surge.gateway.errors import (
    BodyTooLarge,
    IdempotencyKeyReused,
    InvalidPayload,
    OutcomeUnknown,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from surge.gateway.exchange import Headers, Request, ResponseWriter
from surge.gateway.routes.replies import send_json
from surge.httpkit.media import json_media_type_problem
from surge.ids import random_uuid
from surge.queue.interface import OutgoingMessage, SendResult
from surge.results.interface import KeyBinding, ResultStore

log = logging.getLogger(__name__)

SEND_DEADLINE = 5.0  # seconds a client waits for the queue before 504
RECORD_DEADLINE = 2.0  # seconds a client waits for the result store before 503
RETRY_AFTER = 2
# An Idempotency-Key: 1–255 visible ASCII characters but '"' and '\' (Stripe allows 255);
# a structured-field string ("...", as the IETF draft writes it) is unquoted first.
IDEMPOTENCY_KEY = re.compile(rb'[\x21\x23-\x5b\x5d-\x7e]{1,255}')
REPLAYED_HEADER = (b"idempotent-replayed", b"true")


class MessageSender(Protocol):
    """``BatchingSender`` with ``deadline=SEND_DEADLINE`` (raising ``TimeoutError`` past
    it), or a ``QueueClient`` bounded by its own request timeouts."""

    async def send(self, queue: str, message: OutgoingMessage) -> SendResult: ...


def require_json(headers: Headers) -> None:
    """``UnsupportedMediaType`` unless the body is declared JSON (see ``surge.httpkit.media``:
    without this, a form on any web site could enqueue tasks from its visitors' browsers)."""
    values = [value for name, value in headers if name == b"content-type"]
    if len(values) > 1:
        raise InvalidPayload("more than one Content-Type header")
    problem = json_media_type_problem(values[0].decode("latin-1") if values else None)
    if problem is not None:
        raise UnsupportedMediaType(problem)


def idempotency_key(headers: Headers) -> bytes | None:
    values = [value for name, value in headers if name == b"idempotency-key"]
    if not values:
        return None
    if len(values) > 1:
        raise InvalidPayload("more than one Idempotency-Key header")
    key = values[0].strip(b" \t")
    if len(key) >= 2 and key.startswith(b'"') and key.endswith(b'"'):
        key = key[1:-1]
    if IDEMPOTENCY_KEY.fullmatch(key) is None:
        raise InvalidPayload("Idempotency-Key: expected 1 to 255 visible ASCII characters "
                             "other than '\"' and '\\' (a UUID is a good key)")
    return key


def parse_payload(body: bytes) -> Any:
    """The JSON value of ``body``; ``InvalidPayload`` says where and why it is not JSON."""
    if not body.strip():
        raise InvalidPayload("the request body is empty; expected a JSON document")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):  # orjson reads 1,024 levels
            raise InvalidPayload(f"the request body is not accepted: {PayloadTooDeep()}") \
                from None
        raise InvalidPayload(f"the request body is not valid JSON: {exc}") from None


class QueuedRecorder:
    """Collects (task_id, task) pairs and writes them with one ``mark_queued`` per loop
    iteration. ``record`` returns the batch's outcome, which never raises: None once the
    records are stored, else why not (the write failed, or took longer than ``deadline`` —
    one timer per batch, not one per request)."""

    def __init__(self, store: ResultStore | None, deadline: float = RECORD_DEADLINE) -> None:
        self.store = store
        self.deadline = deadline
        self._pending: list[tuple[str, str]] = []
        self._pending_write: asyncio.Future[str | None] | None = None
        self._writes: set[asyncio.Task[None]] = set()

    def record(self, task_id: str, task: str) -> asyncio.Future[str | None]:
        loop = asyncio.get_running_loop()
        if self.store is None:
            done: asyncio.Future[str | None] = loop.create_future()
            done.set_result("no result store is open (see the gateway's start-up log)")
            return done
        if self._pending_write is None:
            self._pending_write = loop.create_future()
            loop.call_soon(self._flush)
        self._pending.append((task_id, task))
        return self._pending_write

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        batch_done, self._pending_write = self._pending_write, None
        if batch_done is None:
            return
        assert batch and self.store is not None
        write = asyncio.ensure_future(self._write(self.store, batch, batch_done))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        late = asyncio.get_running_loop().call_later(
            self.deadline, _resolve, batch_done,
            f"the result store did not answer within {self.deadline:g}s")
        batch_done.add_done_callback(lambda _: late.cancel())

    @staticmethod
    async def _write(store: ResultStore, batch: list[tuple[str, str]],
                     batch_done: asyncio.Future[str | None]) -> None:
        try:
            await store.mark_queued(batch)
        except Exception as exc:
            log.warning("could not record %d queued tasks: %s", len(batch), exc)
            _resolve(batch_done, f"the result store failed: {exc}")
        else:
            _resolve(batch_done, None)

    async def close(self) -> None:
        self._flush()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)


def _resolve(future: asyncio.Future[str | None], outcome: str | None) -> None:
    if not future.done():
        future.set_result(outcome)


class EnqueueHandler:
    def __init__(self, route: EnqueueRoute, sender: MessageSender,
                 recorder: QueuedRecorder) -> None:
        self.queue = route.queue
        self.task = route.task
        self.max_body_size = route.max_body_size
        self.key_ttl = route.idempotency_key_ttl
        self.sender = sender
        self.recorder = recorder

    async def handle(self, request: Request, response: ResponseWriter) -> None:
        require_json(request.headers)
        key = idempotency_key(request.headers)
        body = await request.body.read_all(self.max_body_size)
        payload = parse_payload(body)
        task_id = random_uuid()
        message = self._message(task_id, payload)  # refuses a payload too deep, before storing
        status, replayed = "queued", False
        if key is None:
            await self._record(task_id)
            await self._send(message)
        else:
            scoped = self._scoped_key(key)
            binding, status = await self._bind(scoped, task_id, body)
            if not binding.created:
                task_id, replayed = binding.task_id, True
                message = self._message(task_id, payload)
            # Sent again unless the queue confirmed a send or a worker has seen the task.
            if status == "queued" and not binding.sent:
                await self._send(message)
                await self._note_sent(scoped)
        response.set_log_fields(task_id=task_id)
        headers = [(b"location", f"/tasks/{task_id}".encode())]
        if replayed:
            headers.append(REPLAYED_HEADER)
        await send_json(response, 202, {"id": task_id, "status": status}, headers)

    def _message(self, task_id: str, payload: Any) -> OutgoingMessage:
        try:
            return OutgoingMessage(
                encode_envelope(self.task, payload, task_id, time.time(), random_uuid()))
        except PayloadTooDeep as exc:
            raise InvalidPayload(f"the request body is not accepted: {exc}") from None

    async def _record(self, task_id: str) -> None:
        # Shielded: the batch's future is shared, and a cancelled handler must not cancel
        # it for the others. It resolves by the recorder's deadline at the latest.
        problem = await asyncio.shield(self.recorder.record(task_id, self.task))
        if problem is not None:
            raise ServiceUnavailable(f"the task was not stored: {problem}", RETRY_AFTER)

    def _scoped_key(self, key: bytes) -> str:
        """Keys are per queue and task name; stored hashed, so any key has one short form."""
        return hashlib.sha256(b"%s\n%s\n%s" % (self.queue.encode(), self.task.encode(),
                                               key)).hexdigest()

    async def _bind(self, key: str, task_id: str, body: bytes) -> tuple[KeyBinding, str]:
        """The binding of ``key`` (made now, to ``task_id``, if there was none) and its
        task's status; the binding and the queued record are stored before this returns."""
        store = self.recorder.store
        if store is None:
            raise ServiceUnavailable("the task was not stored: no result store is open",
                                     RETRY_AFTER)
        fingerprint = hashlib.sha256(body).hexdigest()
        try:
            async with asyncio.timeout(RECORD_DEADLINE):
                binding = await store.bind_key(key, task_id, self.task, fingerprint,
                                               self.key_ttl)
                if binding.created:
                    return binding, "queued"
                if binding.fingerprint != fingerprint:
                    raise IdempotencyKeyReused(
                        "this Idempotency-Key was used with a different request body")
                record = await store.get(binding.task_id)
                if record is None:  # its record expired or was evicted: record it again
                    await store.mark_queued([(binding.task_id, self.task)])
                    return binding, "queued"
                return binding, record.status
        except TimeoutError:
            raise ServiceUnavailable(
                f"the task was not stored: the result store did not answer within "
                f"{RECORD_DEADLINE:g}s", RETRY_AFTER) from None
        except ResultStoreError as exc:
            raise ServiceUnavailable(f"the task was not stored: {exc}", RETRY_AFTER) from exc

    async def _note_sent(self, key: str) -> None:
        """Best effort: if this fails, a retry with the key sends the task once more, and
        the workers run one copy."""
        assert self.recorder.store is not None
        try:
            async with asyncio.timeout(RECORD_DEADLINE):
                await self.recorder.store.mark_key_sent(key)
        except (ResultStoreError, TimeoutError) as exc:
            log.warning("could not note that idempotency key %s was sent: %r", key, exc)

    async def _send(self, message: OutgoingMessage) -> None:
        try:
            await self.sender.send(self.queue, message)  # the sender keeps SEND_DEADLINE
        except TimeoutError:
            raise OutcomeUnknown("the queue did not confirm the task in time; it may have "
                                 "been stored", RETRY_AFTER) from None
        except QueueNotReached as exc:
            raise ServiceUnavailable(f"the queue could not be reached: {exc}",
                                     RETRY_AFTER) from exc
        except QueueUnavailable as exc:
            raise OutcomeUnknown(f"the queue did not confirm the task: {exc}",
                                 RETRY_AFTER) from exc
        except QueueError as exc:
            if exc.code == "MessageTooLong":
                raise BodyTooLarge(f"the queue refused the message: {exc}") from exc
            if exc.code in ("InvalidMessageContents", "InvalidParameterValue"):
                raise InvalidPayload(f"the queue refused the message: {exc}") from exc
            raise ServiceUnavailable(f"the queue refused the message: {exc}",
                                     RETRY_AFTER) from exc
