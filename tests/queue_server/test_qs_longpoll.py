"""Long-poll wake-ups: counted, oldest first, passed on by a receiver that went away."""

from __future__ import annotations

import asyncio

from surge.queue.server.broker import Broker
from surge.queue.server.longpoll import LongPollWaiters
from surge.queue.server.service import CallContext, QueueService

CONTEXT = CallContext("http://127.0.0.1:1", "AKID")


def test_wake_counts_and_order() -> None:
    async def main() -> None:
        waiters = LongPollWaiters()
        parked = [asyncio.create_task(waiters.wait("q", 5)) for _ in range(3)]
        await asyncio.sleep(0)
        assert waiters.parked("q") == 3
        waiters.wake("q", 1)
        await asyncio.sleep(0.01)
        assert [task.done() for task in parked] == [True, False, False]
        waiters.wake("q")
        await asyncio.gather(*parked)
        assert waiters.parked("q") == 0

    asyncio.run(main())


def test_a_cancelled_receiver_passes_its_wake_up_on() -> None:
    async def main() -> None:
        waiters = LongPollWaiters()
        first = asyncio.create_task(waiters.wait("q", 5))
        second = asyncio.create_task(waiters.wait("q", 5))
        await asyncio.sleep(0)
        waiters.wake("q", 1)
        first.cancel()  # woken, but its client went away before it ran
        await asyncio.sleep(0.01)
        assert first.cancelled() and second.done()

    asyncio.run(main())


def test_one_send_wakes_one_of_many_long_polls() -> None:
    async def main() -> None:
        service = QueueService(Broker())
        await service.call("CreateQueue", {"QueueName": "q"}, CONTEXT)
        polls = [asyncio.create_task(service.call(
            "ReceiveMessage", {"QueueUrl": "q", "WaitTimeSeconds": 2}, CONTEXT))
            for _ in range(5)]
        await asyncio.sleep(0.05)
        await service.call("SendMessage", {"QueueUrl": "q", "MessageBody": "m"}, CONTEXT)
        await asyncio.sleep(0.05)
        done = [task for task in polls if task.done()]
        assert len(done) == 1 and done[0].result()["Messages"][0]["Body"] == "m"
        assert service.waiters.parked("q") == 4
        service.stop()
        assert all(r == {} for r in await asyncio.gather(*[p for p in polls if not p.done()]))

    asyncio.run(main())


class _HeldCommits:
    """A store whose commits wait until the test lets them through."""

    disk_full = False

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def durable(self) -> None:
        await self.release.wait()


def test_messages_taken_for_a_receiver_that_went_away_are_handed_back_at_once() -> None:
    async def main() -> None:
        store = _HeldCommits()
        service = QueueService(Broker(), store)  # type: ignore[arg-type]
        store.release.set()
        await service.call("CreateQueue", {"QueueName": "q"}, CONTEXT)
        await service.call("SendMessage", {"QueueUrl": "q", "MessageBody": "job"}, CONTEXT)
        store.release.clear()
        gone = asyncio.create_task(service.call(
            "ReceiveMessage", {"QueueUrl": "q", "VisibilityTimeout": 600}, CONTEXT))
        await asyncio.sleep(0.01)  # taken, waiting for its commit
        gone.cancel()  # the client closed its connection
        await asyncio.sleep(0)
        store.release.set()
        result = await service.call("ReceiveMessage", {"QueueUrl": "q"}, CONTEXT)
        assert [m["Body"] for m in result["Messages"]] == ["job"]  # not 600 s later
        assert gone.cancelled()

    asyncio.run(main())
