"""Many new clients at once against the queue server: surge's vs moto's, in one run.

    .venv/bin/python bench/queue/connections.py     # ~40 s, prints a table

wrk opens ``--connections`` (1,000) new connections at once and sends GetQueueUrl (the JSON
protocol, as boto3 does) on each as fast as it is answered, for ``--duration`` seconds with a
2 s timeout; surge runs before and after moto. What this shows is the tail: a server that
leaves new connections in its listen backlog answers the first requests on them late, or
past the timeout (libuv under uvloop's ``create_server`` accepts one connection per turn of
the event loop; surge's servers take every queued connection at once, ``httpkit.acceptor``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.lib.loadgen import WrkResult, run_wrk_parallel, total, widen_port_range
from bench.queue.run import start_moto, start_surge

QUEUE = "burst"
GET_QUEUE_URL = f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-amz-json-1.0"
wrk.headers["X-Amz-Target"] = "AmazonSQS.GetQueueUrl"
wrk.body = '{{"QueueName": "{QUEUE}"}}'
"""


def create_queue(endpoint: str) -> None:
    request = urllib.request.Request(
        endpoint + "/", data=b'{"QueueName": "%s"}' % QUEUE.encode(), method="POST",
        headers={"Content-Type": "application/x-amz-json-1.0",
                 "X-Amz-Target": "AmazonSQS.CreateQueue"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, response.status


def burst(endpoint: str, script: str, connections: int, duration: int) -> WrkResult:
    return total(run_wrk_parallel([endpoint + "/"], connections, duration, threads=2,
                                  script=script, timeout_s=2, latency=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    args = parser.parse_args()
    widen_port_range()
    rows: list[tuple[str, WrkResult]] = []
    with tempfile.TemporaryDirectory(prefix="surge-bench-burst-") as scratch:
        script = Path(scratch) / "get_queue_url.lua"
        script.write_text(GET_QUEUE_URL)
        for name in ("surge", "moto", "surge"):
            data_dir = tempfile.mkdtemp(dir=scratch)
            process, endpoint = start_surge(data_dir) if name == "surge" else start_moto()
            try:
                create_queue(endpoint)
                rows.append((name, burst(endpoint, str(script), args.connections,
                                         args.duration)))
                r = rows[-1][1]
                print(f"  {name:6} {r.requests_per_second:9.0f} req/s  p99 "
                      f"{r.latency_ms.get('99%', 0):.0f} ms  errors {r.socket_errors}",
                      flush=True)
            finally:
                process.terminate()
                process.wait(15)
    print(f"\n{args.connections} new connections, GetQueueUrl, {args.duration} s each "
          f"(wrk, 2 s timeout)")
    print(f"{'server':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'timeouts':>9} "
          f"{'other errors':>13}")
    for name, r in rows:
        timeouts = r.socket_errors.get("timeout", 0)
        print(f"{name:8} {r.requests_per_second:>9.0f} {r.latency_ms.get('50%', 0):>8.1f} "
              f"{r.latency_ms.get('99%', 0):>8.1f} {timeouts:>9} {r.errors - timeouts:>13}")


if __name__ == "__main__":
    main()
