"""The proxy route against nginx, side by side in one run.

    .venv/bin/python bench/gateway/proxy.py          # ~3 minutes, prints a table

Scenarios (wrk, 2 s request timeout, every run bounded by -d; latency percentiles are of
the requests that completed — a timed-out one counts under "timeouts" instead):
  - Starman alone (4 workers), 100 connections: what the app server can do by itself.
  - nginx (upstream keepalive 64) → Starman and surge gateway → Starman (pool workers = 4,
    so at most 4 requests in flight to Starman, the rest wait at the gateway), at 100 and
    at 5,000 connections (5,000 spread over 127.0.0.1/.2/.3).
  - nginx → and surge → a fast Python backend (granian, ASGI), 1,000 connections.
Fronts run in the order surge, nginx, surge (each with a fresh Starman), and surge's figure
is the mean of its two runs: on a shared machine the speed drifts within minutes.
nginx and the gateway run the same number of processes (--processes) at the same
scheduling priority (--priority: nginx's worker_priority, surge's gateway.priority; as
root, -10 by default, which keeps the one front process ahead of the four Starman workers
it feeds on the same two cores). Figures on a shared 2-core machine are noisy: compare
ratios within one run.

--front-cpus 0 runs each front on CPU 0 alone, and everything else (Starman, granian, wrk) on
the other CPUs: the front's CPU then no longer comes out of the backend's, as when the front
has machines or cores of its own (an ALB, or nginx on its own hosts).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.lib.loadgen import WrkResult, run_wrk_parallel, total, widen_port_range
from bench.lib.processes import SURGE, Server, free_port, wait_for_port

PSGI_APP = """
my $body = 'Hello from Starman';
sub { return [200, ['Content-Type' => 'text/plain', 'Content-Length' => length $body],
              [$body]]; };
"""

ASGI_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"19")]})
    await send({"type": "http.response.body", "body": b"Hello from granian\\n"})
"""

NGINX_PROXY_CONFIG = """
worker_processes {processes};
worker_priority {priority};
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log error;
events {{ worker_connections 19000; multi_accept on; }}
http {{
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream app {{ server {target}; keepalive 64; }}
    server {{
        listen 0.0.0.0:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_read_timeout 180s;
        }}
    }}
}}
"""

SURGE_CONFIG = """
data_dir = "{dir}/data"
[gateway]
listen = "0.0.0.0:0"
processes = {processes}
priority = {priority}
backlog = 4096
[gateway.access_log]
enabled = false
[pools.app]
targets = ["{target}"]
workers = {workers}
keepalive_per_target = 64
balancing = "least_outstanding"
[[routes]]
prefix = "/"
proxy = {{ pool = "app" }}
"""


# A-B-A: the machine's speed drifts within minutes; surge's figure is the mean of a run
# before and a run after nginx's, so a drift in either direction cancels out.
FRONT_ORDER = ("surge", "nginx", "surge")


@dataclass
class Row:
    scenario: str
    server: str
    connections: int
    result: WrkResult


def start_starman(directory: Path, workers: int, psgi: str = PSGI_APP) -> tuple[Server, str]:
    assert shutil.which("starman"), "starman is missing (apt-get install starman)"
    app = directory / "bench.psgi"
    app.write_text(psgi)
    port = free_port()
    server = Server(["starman", "--workers", str(workers), "--listen", f"127.0.0.1:{port}",
                     "--backlog", "4096", str(app)])
    wait_for_port(port)
    return server, f"127.0.0.1:{port}"


def start_granian(directory: Path) -> tuple[Server, str]:
    (directory / "fastapp.py").write_text(ASGI_APP)
    port = free_port()
    granian = str(Path(sys.executable).parent / "granian")
    server = Server([granian, "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                     "--workers", "1", "--backlog", "4096", "--no-ws", "--log-level", "error",
                     "fastapp:app"], cwd=directory)
    wait_for_port(port)
    return server, f"127.0.0.1:{port}"


def start_nginx_proxy(directory: Path, target: str, processes: int,
                      priority: int = 0) -> tuple[Server, int]:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "nginx.conf"
    config.write_text(NGINX_PROXY_CONFIG.format(processes=processes, dir=directory, port=port,
                                                target=target, priority=priority))
    server = Server(["nginx", "-c", str(config), "-p", str(directory)])
    wait_for_port(port)
    return server, port


def start_surge(directory: Path, target: str, processes: int, workers: int,
                priority: int = 0) -> tuple[Server, int]:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "surge.toml"
    config.write_text(SURGE_CONFIG.format(dir=directory, processes=processes, target=target,
                                          workers=workers, priority=priority))
    server = Server([SURGE, "gateway", "-c", str(config)])
    port = server.read_listening()
    wait_for_port(port)
    return server, port


def load(port: int, connections: int, duration: int) -> WrkResult:
    hosts = 3 if connections > 1000 else 1
    urls = [f"http://127.0.0.{i + 1}:{port}/" for i in range(hosts)]
    # warm up: connections, keep-alive pools, nginx/gateway caches
    run_wrk_parallel(urls[:1], min(connections, 50), 1, timeout_s=2)
    return total(run_wrk_parallel(urls, connections // hosts, duration,
                                  threads=1 if hosts > 1 else 2, timeout_s=2, latency=True))


def pin(server: Server, cpus: set[int] | None) -> None:
    """Run ``server``'s processes on ``cpus`` only: the parent first, so that a worker it
    forks from then on inherits them, then the workers it has already forked."""
    if cpus is None:
        return
    parent = psutil.Process(server.popen.pid)
    parent.cpu_affinity(sorted(cpus))
    for child in parent.children(recursive=True):
        child.cpu_affinity(sorted(cpus))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--processes", type=int, default=1,
                        help="nginx worker processes and surge gateway processes")
    parser.add_argument("--starman-workers", type=int, default=4)
    parser.add_argument("--starman-connections", default="100,5000",
                        help="comma-separated connection counts for the Starman scenarios")
    parser.add_argument("--python-limit", type=int, default=64,
                        help="surge's per-target concurrency limit for the Python backend")
    parser.add_argument("--priority", type=int, default=-10 if os.geteuid() == 0 else 0,
                        help="nice value of both fronts (nginx worker_priority, surge "
                             "gateway.priority); default -10 as root, else 0")
    parser.add_argument("--front-cpus", help="comma-separated CPUs for the fronts alone; the "
                        "backends and wrk run on the others (default: all share all CPUs)")
    args = parser.parse_args()
    front_cpus = {int(c) for c in args.front_cpus.split(",")} if args.front_cpus else None
    if front_cpus is not None:
        others = os.sched_getaffinity(0) - front_cpus
        assert others, f"--front-cpus {args.front_cpus} leaves no CPU for the backends and wrk"
        os.sched_setaffinity(0, others)  # inherited by every process started from here
        print(f"fronts on CPUs {sorted(front_cpus)}, backends and wrk on {sorted(others)}")
    print(f"front priority (nice): {args.priority}", flush=True)
    print(f"ephemeral ports: {widen_port_range()}", flush=True)
    rows: list[Row] = []
    base = Path(tempfile.mkdtemp(prefix="surge-bench-proxy-"))
    try:
        # A fresh Starman for each front: connections a front left in Starman's backlog
        # would otherwise delay the next front's first requests.
        starman, starman_address = start_starman(base, args.starman_workers)
        try:
            port = int(starman_address.rpartition(":")[2])
            rows.append(Row("starman", "starman alone", 100, load(port, 100, args.duration)))
            _report(rows[-1])
        finally:
            starman.stop()
        for name in FRONT_ORDER:
            starman, starman_address = start_starman(base, args.starman_workers)
            if name == "nginx":
                server, port = start_nginx_proxy(base / "nginx-starman", starman_address,
                                                 args.processes, args.priority)
            else:
                server, port = start_surge(base / "surge-starman", starman_address,
                                           args.processes, args.starman_workers, args.priority)
            pin(server, front_cpus)
            try:
                for connections in (int(c) for c in args.starman_connections.split(",")):
                    rows.append(Row("starman", name, connections,
                                    load(port, connections, args.duration)))
                    _report(rows[-1])
                    time.sleep(1)
            finally:
                server.stop()
                starman.stop()
        granian, granian_address = start_granian(base)
        try:
            for name in FRONT_ORDER:
                server, port = (
                    start_nginx_proxy(base / "nginx-python", granian_address, args.processes,
                                      args.priority) if name == "nginx" else
                    start_surge(base / "surge-python", granian_address, args.processes,
                                args.python_limit, args.priority))
                pin(server, front_cpus)
                try:
                    rows.append(Row("python", name, 1000, load(port, 1000, args.duration)))
                    _report(rows[-1])
                finally:
                    server.stop()
        finally:
            granian.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    _table(rows)


def _report(row: Row) -> None:
    r = row.result
    print(f"  {row.scenario:8} {row.server:14} c={row.connections:<5} "
          f"{r.requests_per_second:9.0f} req/s  non-2xx={r.non_2xx} errors={r.socket_errors}",
          flush=True)


def _merged(rows: list[Row]) -> list[Row]:
    """One row per (backend, front, connections): a front run twice (A-B-A) gets the mean
    of its requests/s, the sum of its errors and the worse of its latencies."""
    groups: dict[tuple[str, str, int], list[WrkResult]] = {}
    for row in rows:
        groups.setdefault((row.scenario, row.server, row.connections), []).append(row.result)
    merged = []
    for (scenario, server, connections), results in groups.items():
        result = total(results)
        result.requests_per_second /= len(results)
        label = server if len(results) == 1 else f"{server} (mean {len(results)})"
        merged.append(Row(scenario, label, connections, result))
    return merged


def _table(rows: list[Row]) -> None:
    rows = _merged(rows)
    print()
    print(f"{'backend':9} {'front':14} {'conns':>6} {'req/s':>9} {'non-2xx':>8} "
          f"{'timeouts':>9} {'sock err':>9} {'p50 ms':>7} {'p99 ms':>7} {'vs nginx':>9}")
    nginx = {(r.scenario, r.connections): r.result.requests_per_second
             for r in rows if r.server == "nginx"}
    for row in rows:
        r = row.result
        reference = nginx.get((row.scenario, row.connections))
        ratio = (f"{r.requests_per_second / reference:8.2f}x"
                 if reference and row.server.startswith("surge") else "")
        print(f"{row.scenario:9} {row.server:14} {row.connections:>6} "
              f"{r.requests_per_second:>9.0f} {r.non_2xx:>8} "
              f"{r.socket_errors.get('timeout', 0):>9} "
              f"{r.errors - r.socket_errors.get('timeout', 0):>9} "
              f"{r.latency_ms.get('50%', 0):>7.1f} {r.latency_ms.get('99%', 0):>7.1f} {ratio:>9}")


if __name__ == "__main__":
    main()
