"""Hold many idle keep-alive connections to a server and measure its memory per connection.

Each connection sends one ``GET /health`` and reads the answer (so it is a used keep-alive
connection, as a browser leaves it), then stays idle. The figure is the RSS growth of the
server's processes divided by the number of connections.

    python -m bench.gateway.connections --port 8080 --pid 1234 --connections 20000
"""

from __future__ import annotations

import argparse
import asyncio
import time

import psutil
import uvloop

REQUEST = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n"


def family_rss(pid: int) -> int:
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


async def _open(port: int, count: int, hosts: int) -> list[asyncio.StreamWriter]:
    writers: list[asyncio.StreamWriter] = []
    gate = asyncio.Semaphore(500)  # connects in flight: keep the accept queues short

    async def one(index: int) -> None:
        async with gate:
            reader, writer = await asyncio.open_connection(f"127.0.0.{index % hosts + 1}", port)
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            await reader.readexactly(2)
            writers.append(writer)

    await asyncio.gather(*(one(i) for i in range(count)))
    return writers


async def measure(port: int, pid: int, count: int, hosts: int = 4,
                  settle: float = 1.0) -> dict[str, float]:
    before = family_rss(pid)
    started = time.monotonic()
    writers = await _open(port, count, hosts)
    opened_in = time.monotonic() - started
    await asyncio.sleep(settle)
    after = family_rss(pid)
    for writer in writers:
        writer.close()
    return {"connections": len(writers), "rss_before": before, "rss_after": after,
            "bytes_per_connection": (after - before) / max(1, len(writers)),
            "open_seconds": opened_in}


def measure_blocking(port: int, pid: int, count: int) -> dict[str, float]:
    return uvloop.run(measure(port, pid, count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--connections", type=int, default=10000)
    args = parser.parse_args()
    print(measure_blocking(args.port, args.pid, args.connections))


if __name__ == "__main__":
    main()
