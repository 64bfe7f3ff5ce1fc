"""Receivers parked on an empty queue, and waking them when messages become available.

Waking is counted: k new messages wake at most k receivers, oldest first, so a busy queue with
many idle long-pollers does not wake all of them for every send. A receiver woken for a message
it will never take (its client went away) passes the wake-up on, so no message waits for a
long poll's full deadline while another receiver is parked.
"""

from __future__ import annotations

import asyncio


class LongPollWaiters:
    def __init__(self) -> None:
        # Per queue, an ordered set (dict keys) of parked receivers, oldest first.
        self._parked: dict[str, dict[asyncio.Future[None], None]] = {}

    def wake(self, queue: str, count: int | None = None) -> None:
        """Wake up to ``count`` receivers of ``queue`` (None: all of them)."""
        parked = self._parked.get(queue)
        woken = 0
        while parked and (count is None or woken < count):
            waiter = next(iter(parked))
            del parked[waiter]
            if not waiter.done():
                waiter.set_result(None)
                woken += 1

    def wake_everyone(self) -> None:
        for queue in list(self._parked):
            self.wake(queue)

    def parked(self, queue: str) -> int:
        return len(self._parked.get(queue, ()))

    async def wait(self, queue: str, timeout: float) -> None:
        """Park until woken or ``timeout`` seconds pass."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        parked = self._parked.setdefault(queue, {})
        parked[waiter] = None
        try:
            await asyncio.wait((waiter,), timeout=timeout)
        except asyncio.CancelledError:
            if waiter.done():
                self.wake(queue, 1)  # woken for a message we will not take: pass it on
            raise
        finally:
            parked.pop(waiter, None)
            if not parked and self._parked.get(queue) is parked:
                del self._parked[queue]
