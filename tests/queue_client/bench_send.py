"""Send throughput against surge's own queue server: direct sends vs BatchingSender.

Not collected by pytest (no test_ prefix). Run: .venv/bin/python -m tests.queue_client.bench_send
Starts `surge queue serve` on a free port in a temporary directory and stops it at the end.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from surge.queue.client.aws import AwsQueueClient
from surge.queue.client.batching import BatchingSender
from surge.queue.client.http import HttpQueueClient
from surge.queue.interface import OutgoingMessage, QueueClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from queue_client.servers import surge_queue_server

CALLERS = 64
MESSAGES = 3000


async def direct(client: QueueClient, queue: str) -> float:
    remaining = iter(range(MESSAGES))

    async def caller() -> None:
        for index in remaining:
            await client.send(queue, OutgoingMessage(f'{{"n": {index}}}'))

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return MESSAGES / (time.perf_counter() - started)


async def batched(client: HttpQueueClient, queue: str) -> tuple[float, float]:
    sender = BatchingSender(client)
    remaining = iter(range(MESSAGES))

    async def caller() -> None:
        for index in remaining:
            await sender.send(queue, OutgoingMessage(f'{{"n": {index}}}'))

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    rate = MESSAGES / (time.perf_counter() - started)
    return rate, sender.messages_sent / max(sender.batches_sent, 1)


async def single_latency(client: HttpQueueClient, queue: str) -> float:
    sender = BatchingSender(client)
    started = time.perf_counter()
    for index in range(200):
        await sender.send(queue, OutgoingMessage(str(index)))
    return (time.perf_counter() - started) / 200 * 1000


async def main(url: str) -> None:
    client = HttpQueueClient(url)
    await client.create_queue("bench")
    await direct(client, "bench")  # warm up
    direct_rate = await direct(client, "bench")
    batched_rate, per_batch = await batched(client, "bench")
    latency = await single_latency(client, "bench")
    await client.close()
    aws = AwsQueueClient("us-east-1", endpoint_url=url, access_key_id="bench",
                         secret_access_key="bench", max_pool_connections=CALLERS)
    await direct(aws, "bench")
    aws_rate = await direct(aws, "bench")
    await aws.close()
    print(f"{CALLERS} concurrent callers, {MESSAGES} messages")
    print(f"  direct SendMessage:   {direct_rate:8.0f} msg/s")
    print(f"  BatchingSender:       {batched_rate:8.0f} msg/s  ({per_batch:.1f} messages/batch)")
    print(f"  ratio batched/direct: {batched_rate / direct_rate:8.1f}x")
    print(f"  aiobotocore SendMessage (same server, signed): {aws_rate:8.0f} msg/s "
          f"(http backend {direct_rate / aws_rate:.1f}x)")
    print(f"  one caller via BatchingSender: {latency:.2f} ms per send (no timer delay)")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as data, surge_queue_server(Path(data)) as url:
        asyncio.run(main(url))
