"""Queue throughput, side by side: surge's queue server vs moto's, with boto3 and surge's client.

    .venv/bin/python bench/queue/run.py            # ~1-2 minutes, prints a table

Each column sends N messages with SendMessageBatch (10 per call), then drains them with
ReceiveMessage(MaxNumberOfMessages=10) + DeleteMessageBatch. Servers run as their own
processes on free loopback ports; boto3 load runs in several processes × threads so the
client is not the only bottleneck. surge's server commits every call durably (SQLite WAL,
synchronous=FULL, group commit). Figures on a shared 2-core machine are noisy: compare the
ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {timeout}s")


# The access key the signed columns use (bench/queue/signing.py).
BENCH_KEY_ID, BENCH_SECRET = "bench", "bench-secret"


def start_surge(data_dir: str, config: str | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [sys.executable, "-c", "from surge.cli import main; main()", "queue", "serve",
            "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir]
    if config is not None:
        argv[5:5] = ["-c", config]
    process = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    wait_until_up(endpoint + "/_surge/ping")
    return process, endpoint


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    moto = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or "moto_server"
    process = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    wait_until_up(endpoint + "/moto-api/")
    return process, endpoint


def boto3_client(endpoint: str, max_pool: int) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sqs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=BENCH_KEY_ID,
        aws_secret_access_key=BENCH_SECRET,
        config=Config(max_pool_connections=max_pool, retries={"max_attempts": 2}),
    )


# -- boto3 load: one function per process, threads inside ---------------------------------------

def _boto3_worker(args: tuple[str, str, str, int, int]) -> tuple[int, float]:
    """Returns (messages handled, wall time of the last useful call's end)."""
    endpoint, queue_url, phase, count, threads = args
    client = boto3_client(endpoint, threads)
    lock = threading.Lock()
    remaining = [count]
    done = [0]
    last = [time.time()]

    def take(n: int) -> int:
        with lock:
            got = min(n, remaining[0])
            remaining[0] -= got
            return got

    def send_loop() -> None:
        while (n := take(10)) > 0:
            entries = [{"Id": str(i), "MessageBody": f"message body {i:04d} " + "x" * 100}
                       for i in range(n)]
            result = client.send_message_batch(QueueUrl=queue_url, Entries=entries)
            assert not result.get("Failed"), result["Failed"]
            last[0] = max(last[0], time.time())

    def receive_loop() -> None:
        # The queue holds only this run's messages, all visible: an empty long poll means
        # it is drained (the wait itself is not counted: see ``last``).
        while True:
            messages = client.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
            ).get("Messages", [])
            if not messages:
                return
            client.delete_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages)])
            with lock:
                done[0] += len(messages)
                last[0] = max(last[0], time.time())

    target: Callable[[], None] = send_loop if phase == "send" else receive_loop
    workers = [threading.Thread(target=target) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (count - remaining[0] if phase == "send" else done[0]), last[0]


@dataclass
class Figures:
    sent_per_second: float
    received_per_second: float
    messages: int


def run_boto3(endpoint: str, queue_name: str, messages: int, processes: int,
              threads: int) -> Figures:
    client = boto3_client(endpoint, 2)
    queue_url = client.create_queue(QueueName=queue_name)["QueueUrl"]
    share = messages // processes
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(time.sleep, [0.0] * processes)  # processes started before the clock runs
        started = time.time()
        results = pool.map(_boto3_worker, [(endpoint, queue_url, "send", share, threads)]
                           * processes)
        sent = sum(n for n, _ in results)
        send_elapsed = max(t for _, t in results) - started
        started = time.time()
        results = pool.map(_boto3_worker, [(endpoint, queue_url, "receive", share, threads)]
                           * processes)
        received = sum(n for n, _ in results)
        receive_elapsed = max(t for _, t in results) - started
    if received != sent:  # moto has been seen handing out a few messages twice
        print(f"note: {endpoint}: sent {sent}, received {received}", file=sys.stderr)
    return Figures(sent / send_elapsed, received / receive_elapsed, sent)


# -- surge's own async client -------------------------------------------------------------------

def run_surge_client(endpoint: str, queue_name: str, messages: int,
                     concurrency: int, signed: bool = False) -> Figures | str:
    try:
        from surge.queue.client import open_queue_client
        from surge.queue.interface import OutgoingMessage
    except ImportError:
        return "surge.queue.client.open_queue_client not available yet"
    from surge.config.settings import QueueBackendSettings

    async def main() -> Figures:
        keys = [{"id": BENCH_KEY_ID, "secret": BENCH_SECRET}] if signed else []
        settings = QueueBackendSettings.model_validate({"url": endpoint, "access_keys": keys})
        client = open_queue_client(settings)
        await client.create_queue(queue_name)
        body = "message body " + "x" * 100
        batches = messages // 10

        async def sender(worker: int) -> int:
            sent = 0
            for _ in range(worker, batches, concurrency):
                results, failures = await client.send_batch(
                    queue_name, [OutgoingMessage(body) for _ in range(10)])
                assert not failures, failures
                sent += len(results)
            return sent

        started = time.perf_counter()
        sent = sum(await asyncio.gather(*(sender(w) for w in range(concurrency))))
        send_elapsed = time.perf_counter() - started
        received = 0
        last = time.perf_counter()

        async def receiver() -> None:
            nonlocal received, last
            while True:
                batch = await client.receive(queue_name, 10, wait_seconds=1)
                if not batch:
                    return  # drained; the empty wait is not counted
                failures = await client.delete_batch(queue_name,
                                                     [m.receipt_handle for m in batch])
                assert not failures, failures
                received += len(batch)
                last = time.perf_counter()

        started = time.perf_counter()
        await asyncio.gather(*(receiver() for _ in range(concurrency)))
        receive_elapsed = last - started
        await client.close()
        return Figures(sent / send_elapsed, received / receive_elapsed, sent)

    import uvloop

    return uvloop.run(main())


# -- raw HTTP: the server's own capacity, with no SDK in the way ----------------------------------

class RawConnection:
    """One keep-alive connection speaking AWS JSON 1.0 by hand (no signing, no SDK)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def call(self, action: str, body: bytes) -> bytes:
        self.writer.write(
            f"POST / HTTP/1.1\r\nHost: bench\r\nX-Amz-Target: AmazonSQS.{action}\r\n"
            f"Content-Type: application/x-amz-json-1.0\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        payload = await self.reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(payload.decode())
        return payload


def run_raw(endpoint: str, queue_name: str, messages: int, connections: int) -> Figures:
    import orjson
    import uvloop

    host, port = endpoint.removeprefix("http://").split(":")

    async def main() -> Figures:
        pool = [RawConnection(*await asyncio.open_connection(host, int(port)))
                for _ in range(connections)]
        url = orjson.loads(await pool[0].call("CreateQueue", orjson.dumps(
            {"QueueName": queue_name})))["QueueUrl"]
        send_body = orjson.dumps({"QueueUrl": url, "Entries": [
            {"Id": str(i), "MessageBody": "message body " + "x" * 100} for i in range(10)]})
        batches = messages // 10

        async def sender(index: int) -> None:
            for _ in range(index, batches, connections):
                await pool[index].call("SendMessageBatch", send_body)

        started = time.perf_counter()
        await asyncio.gather(*(sender(i) for i in range(connections)))
        send_elapsed = time.perf_counter() - started
        receive_body = orjson.dumps({"QueueUrl": url, "MaxNumberOfMessages": 10})
        received = 0

        async def receiver(index: int) -> None:
            nonlocal received
            while True:
                got = orjson.loads(await pool[index].call("ReceiveMessage", receive_body))
                batch = got.get("Messages", [])
                if not batch:
                    return
                await pool[index].call("DeleteMessageBatch", orjson.dumps({
                    "QueueUrl": url, "Entries": [
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(batch)]}))
                received += len(batch)

        started = time.perf_counter()
        await asyncio.gather(*(receiver(i) for i in range(connections)))
        receive_elapsed = time.perf_counter() - started
        for connection in pool:
            connection.writer.close()
        return Figures(batches * 10 / send_elapsed, received / receive_elapsed, batches * 10)

    return uvloop.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000, help="per surge column")
    parser.add_argument("--moto-messages", type=int, default=600)
    parser.add_argument("--processes", type=int, default=2, help="boto3 load processes")
    parser.add_argument("--threads", type=int, default=8, help="boto3 threads per process")
    parser.add_argument("--concurrency", type=int, default=16, help="surge client tasks")
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="surge-bench-queue-")
    surge, surge_endpoint = start_surge(data_dir)
    moto, moto_endpoint = start_moto()
    rows: dict[str, Figures | str] = {}
    try:
        rows["surge server, boto3"] = run_boto3(surge_endpoint, "bench-boto3", args.messages,
                                                args.processes, args.threads)
        rows["moto server, boto3"] = run_boto3(moto_endpoint, "bench-moto", args.moto_messages,
                                               args.processes, args.threads)
        rows["surge server, raw HTTP/JSON"] = run_raw(surge_endpoint, "bench-raw",
                                                      args.messages, args.concurrency)
        try:
            rows["surge server, surge client"] = run_surge_client(
                surge_endpoint, "bench-client", args.messages, args.concurrency)
        except Exception as exc:  # the client is young: report its failure in the table
            rows["surge server, surge client"] = f"failed: {type(exc).__name__}: {exc}"
    finally:
        for process in (surge, moto):
            process.terminate()
            process.wait(15)
        shutil.rmtree(data_dir, ignore_errors=True)
    print_table(rows)


def print_table(rows: dict[str, Figures | str]) -> None:
    print(f"\n{'column':<30} {'messages':>9} {'sent/s':>10} {'recv+del/s':>11}")
    for name, figures in rows.items():
        if isinstance(figures, str):
            print(f"{name:<30} {figures}")
        else:
            print(f"{name:<30} {figures.messages:>9} {figures.sent_per_second:>10.0f} "
                  f"{figures.received_per_second:>11.0f}")
    surge, moto = rows.get("surge server, boto3"), rows.get("moto server, boto3")
    if isinstance(surge, Figures) and isinstance(moto, Figures):
        print(f"\nsurge / moto with boto3: send ×{surge.sent_per_second / moto.sent_per_second:.1f}"
              f", receive+delete ×{surge.received_per_second / moto.received_per_second:.1f}")
    client = rows.get("surge server, surge client")
    if isinstance(client, Figures):
        print(f"surge client targets: send ≥10,000/s "
              f"({'met' if client.sent_per_second >= 10000 else 'NOT met'}), "
              f"receive+delete ≥5,000/s "
              f"({'met' if client.received_per_second >= 5000 else 'NOT met'})")


if __name__ == "__main__":
    main()
