"""Acknowledging messages in batches: DeleteMessageBatch of whatever completed meanwhile.

No timer: a delete waits only while up to ``max_calls`` batch calls are already on the wire,
and everything that completes meanwhile rides the next call (up to 10 per call, SQS's limit).
One idle worker therefore deletes at once; a busy one sends full batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from surge.queue.interface import QueueClient
from surge.worker.slots import SQS_MAX_BATCH

log = logging.getLogger("surge.worker")


class BatchDeleter:
    def __init__(self, client: QueueClient, queue: str, max_calls: int = 2) -> None:
        self._client = client
        self._queue = queue
        self._pending: list[tuple[str, asyncio.Future[bool]]] = []
        self._calls = asyncio.Semaphore(max_calls)
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until done

    async def delete(self, receipt_handle: str) -> bool:
        """True once the queue confirmed the delete; False if it refused or was unreachable
        (the message then comes back after its visibility timeout, and the result store's
        duplicate check acknowledges it without running it again)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((receipt_handle, done))
        if not self._flushing:
            self._flushing = True
            self._spawn(self._flush())
        return await asyncio.shield(done)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        try:
            while self._pending:
                await self._calls.acquire()
                batch, self._pending = (
                    self._pending[:SQS_MAX_BATCH], self._pending[SQS_MAX_BATCH:]
                )
                self._spawn(self._send(batch))
        finally:
            self._flushing = False

    async def _send(self, batch: list[tuple[str, asyncio.Future[bool]]]) -> None:
        try:
            failures = await self._client.delete_batch(self._queue, [h for h, _ in batch])
            failed = {failure.index for failure in failures}
            for failure in failures:
                log.warning("delete refused for a message: %s %s", failure.code, failure.message)
            for index, (_, done) in enumerate(batch):
                if not done.done():
                    done.set_result(index not in failed)
        except Exception as exc:  # QueueError, QueueUnavailable, or a client bug: never hang
            log.warning("delete of %d messages failed: %s", len(batch), exc)
            for _, done in batch:
                if not done.done():
                    done.set_result(False)
        finally:
            self._calls.release()
