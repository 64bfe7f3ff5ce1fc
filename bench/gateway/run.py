"""The gateway's benchmarks in one command, side by side with nginx in the same run.

    .venv/bin/python -m bench.gateway.run [--quick] [--only health,enqueue,memory,proxy]

1. /health at 51,000 keep-alive connections: three wrk processes × 17,000 connections to
   127.0.0.1, .2 and .3; surge gateway vs nginx (``return 200 "OK"``) with as many worker
   processes. Goal: zero socket errors, ≥ 0.9× nginx's requests/s.
4. The enqueue route at 1,000 connections against ``surge queue serve``: accepted (202)
   tasks/s, and every accepted task is in the queue afterwards (GetQueueAttributes).
   ``enqueue-keys`` (not in the default set): the same with a new Idempotency-Key on every
   request (the key's binding is written with the queued record, then marked sent).
5. Memory per idle keep-alive connection (RSS growth of the gateway processes / connections).
2-3. ``bench/gateway/proxy.py`` (the proxy's benchmarks) when it exists.

Everything targets loopback only and stops by itself; a full run takes about 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.gateway.connections import measure_blocking
from bench.lib.loadgen import (
    WrkResult,
    raise_nofile,
    run_wrk_parallel,
    total,
    widen_port_range,
)
from bench.lib.processes import SURGE, Server, start_nginx, wait_for_port

HERE = Path(__file__).parent
REPO = HERE.parent.parent
HEALTH_PROCESSES = 4
ENQUEUE_PROCESSES = int(os.environ.get("SURGE_BENCH_ENQUEUE_PROCESSES", "4"))

GATEWAY_CONFIG = """
data_dir = "{data}"
[gateway]
listen = "0.0.0.0:0"
processes = {processes}
keepalive_timeout = "120s"
[gateway.access_log]
enabled = false
[queue_backend]
url = "embedded"
listen = "{queue}"
[queues.jobs]
[[routes]]
prefix = "/jobs"
methods = ["POST"]
enqueue = {{ queue = "jobs", task = "bench" }}
"""

# No response() hook: wrk then skips parsing every response in Lua, which would take CPU
# from the gateway on a 2-core machine. Accepted = responses − non-2xx (202 is the only
# 2xx the route sends).
ENQUEUE_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"image": "cat.png", "width": 300}'
wrk.headers["Content-Type"] = "application/json"
"""

# Every request with a key of its own: a random prefix per wrk process and a counter.
ENQUEUE_KEYS_SCRIPT = ENQUEUE_SCRIPT + """
math.randomseed(os.time() + os.clock() * 1000000)
local prefix = tostring(math.random(1, 2147483647)) .. "-"
local counter = 0
request = function()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = prefix .. counter
  return wrk.format()
end
"""


def start_gateway(work: Path, processes: int, queue: str = "127.0.0.1:1") -> tuple[Server, int]:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "surge.toml"
    config.write_text(GATEWAY_CONFIG.format(data=work / "data", processes=processes, queue=queue))
    server = Server([SURGE, "gateway", "-c", str(config)], cwd=work)
    port = server.read_listening()
    wait_for_port(port)
    time.sleep(1.0)  # every child has its loop running
    return server, port


def bench_health(work: Path, duration: int, per_wrk: int) -> list[dict[str, Any]]:
    urls = lambda port: [f"http://127.0.0.{i}:{port}/health" for i in (1, 2, 3)]  # noqa: E731
    rows = []

    def run_surge(tag: str) -> WrkResult:
        gateway, port = start_gateway(work / f"gateway-health-{tag}", HEALTH_PROCESSES)
        try:
            return total(run_wrk_parallel(urls(port), per_wrk, duration))
        finally:
            gateway.stop()
            time.sleep(2)

    # A-B-A order: the machine is shared and its load drifts; surge's figure is the mean of
    # a run before and a run after nginx's.
    first = run_surge("a")
    nginx, nginx_port = start_nginx(work / "nginx-health", HEALTH_PROCESSES)
    try:
        reference = total(run_wrk_parallel(urls(nginx_port), per_wrk, duration))
    finally:
        nginx.stop()
        time.sleep(2)
    second = run_surge("b")
    surge = total([first, second])
    surge.requests_per_second /= 2
    print(f"/health surge runs: {first.requests_per_second:.0f} and "
          f"{second.requests_per_second:.0f} req/s; nginx {reference.requests_per_second:.0f}",
          flush=True)
    for name, result in (("surge gateway", surge), ("nginx", reference)):
        rows.append({"bench": f"1. /health, {3 * per_wrk} conns", "server": name,
                     "req/s": round(result.requests_per_second),
                     "socket errors": result.errors, "non-2xx": result.non_2xx})
    ratio = surge.requests_per_second / max(1.0, reference.requests_per_second)
    rows.append({"bench": "1. ratio surge/nginx", "server": "", "req/s": f"{ratio:.2f}",
                 "socket errors": "", "non-2xx": "goal ≥ 0.90, 0 errors"})
    return rows


def bench_enqueue(work: Path, duration: int, connections: int,
                  keys: bool = False) -> list[dict[str, Any]]:
    import boto3
    from botocore.config import Config

    sys.path.insert(0, str(REPO / "tests" / "gateway"))
    from gateway_support import QueueServer  # the same launcher the tests use

    suffix = "-keys" if keys else ""
    queue = QueueServer(work / f"queue-data{suffix}")
    gateway = None
    try:
        sqs: Any = boto3.client("sqs", endpoint_url=queue.endpoint, region_name="us-east-1",
                                aws_access_key_id="AKID", aws_secret_access_key="secret",
                                config=Config(retries={"max_attempts": 1}))
        queue_url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
        gateway, port = start_gateway(work / f"gateway-enqueue{suffix}", ENQUEUE_PROCESSES,
                                      queue.address)
        script = work / "enqueue.lua"
        script.write_text(ENQUEUE_KEYS_SCRIPT if keys else ENQUEUE_SCRIPT)
        result = total(run_wrk_parallel([f"http://127.0.0.1:{port}/jobs"], connections,
                                        duration, script=str(script)))
        gateway.stop()
        gateway = None
        stored = int(sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"],
        )["Attributes"]["ApproximateNumberOfMessages"])
    finally:
        if gateway is not None:
            gateway.stop()
        queue.kill()
    accepted = result.requests - result.non_2xx
    label = "enqueue with keys" if keys else "enqueue"
    return [{"bench": f"4. {label}, {connections} conns", "server": "surge gateway + queue",
             "req/s": round(accepted / max(result.seconds, 0.001)),
             "socket errors": result.errors,
             "non-2xx": f"{result.non_2xx} refused; accepted "
                        f"{accepted}, in queue {stored} "
                        f"({'OK' if stored >= accepted else 'LOST TASKS'})"}]


def bench_memory(work: Path, connections: int) -> list[dict[str, Any]]:
    gateway, port = start_gateway(work / "gateway-memory", HEALTH_PROCESSES)
    try:
        figures = measure_blocking(port, gateway.popen.pid, connections)
    finally:
        gateway.stop()
    nginx, nginx_port = start_nginx(work / "nginx-memory", HEALTH_PROCESSES)
    try:
        reference = measure_blocking(nginx_port, nginx.popen.pid, connections)
    finally:
        nginx.stop()
    return [{"bench": f"5. memory / idle conn, {connections} conns", "server": name,
             "req/s": f"{f['bytes_per_connection'] / 1024:.1f} KiB",
             "socket errors": "", "non-2xx": "goal ≤ 10 KB" if name.startswith("surge") else ""}
            for name, f in (("surge gateway", figures), ("nginx", reference))]


def bench_proxy(quick: bool) -> list[dict[str, Any]]:
    script = HERE / "proxy.py"
    if not script.exists():
        return [{"bench": "2-3. proxy", "server": "bench/gateway/proxy.py missing",
                 "req/s": "", "socket errors": "", "non-2xx": ""}]
    argv = [sys.executable, str(script), *(["--duration", "3"] if quick else [])]
    completed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    print(completed.stdout)
    if completed.returncode != 0:
        print(completed.stderr[-2000:], file=sys.stderr)
    return [{"bench": "2-3. proxy", "server": "see the proxy table above",
             "req/s": "", "socket errors": "", "non-2xx": f"exit {completed.returncode}"}]


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = ["bench", "server", "req/s", "socket errors", "non-2xx"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer connections")
    parser.add_argument("--only", default="health,enqueue,memory,proxy")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args()
    raise_nofile()
    print(f"ephemeral ports: {widen_port_range()}", flush=True)
    chosen = set(args.only.split(","))
    duration = 5 if args.quick else 10
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="surge-bench-") as temp:
        work = Path(temp)
        if "health" in chosen:
            rows += bench_health(work, duration, 2000 if args.quick else 17000)
        if "enqueue" in chosen:
            rows += bench_enqueue(work, duration, 1000)
        if "enqueue-keys" in chosen:
            rows += bench_enqueue(work, duration, 1000, keys=True)
        if "memory" in chosen:
            rows += bench_memory(work, 2000 if args.quick else 15000)
        if "proxy" in chosen:
            rows += bench_proxy(args.quick)
    print_table(rows)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
