"""The gateway's Python cost per proxied request, without sockets, against a git revision.

    .venv/bin/python bench/gateway/hotpath.py [--against REV] [--requests N] [--body BYTES]

What a proxied request costs in the gateway's own code, with the kernel and the event loop's
I/O left out: the real ``HttpConnection``, proxy route and ``UpstreamConnection`` objects,
fed by in-memory transports. ``--clients`` (100) keep one request each outstanding against
a pool of one target with 4 slots (a Starman with 4 workers), so most requests wait in line
for a slot, as under ``wrk -c100`` in ``bench/gateway/proxy.py``. The reference is the same
measurement of an earlier revision (default ``HEAD~1``), checked out in a temporary git
worktree and run in turn with this one. CPU time, best of 7 rounds each: on a shared
machine the best round is the one least disturbed. ``--body BYTES`` makes each request a
POST with a body of that size (the coroutine path, and past ``gateway.body_buffer_size`` a
temporary file), with fewer requests per round.

Why this exists: in front of Starman on two shared cores, the gateway's CPU per request
decides its throughput against nginx, and its Python part is the share this project can
change (docs/benchmarks.md, "Where the proxy's time goes").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 7
SLOTS = 4
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 18\r\n\r\n"
            b"Hello from Starman")


class MemoryTransport:
    """What the gateway's protocols call on a transport, writes kept in memory; a first
    write puts the transport on ``answered`` (so the driver never scans every client)."""

    def __init__(self, peer: tuple[str, int], answered: list[MemoryTransport]) -> None:
        self.written: list[bytes] = []
        self.peer = peer
        self.closing = False
        self.answered = answered
        self.client: Any = None

    def write(self, data: bytes) -> None:
        if not self.written:
            self.answered.append(self)
        self.written.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


def post_with_body(size: int) -> bytes:
    return (b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (size, b"x" * size))


async def measure(requests: int, data_dir: str, clients: int, request: bytes = REQUEST) -> float:
    """Microseconds of CPU per proxied request in this interpreter's ``surge``."""
    from surge.config.loader import validate_settings
    from surge.gateway.http.accesslog import AccessLog
    from surge.gateway.http.limits import Limits
    from surge.gateway.http.protocol import HttpConnection
    from surge.gateway.http.server import GatewayServer
    from surge.gateway.main import Components, build_routes
    from surge.gateway.proxy.upstream import UpstreamConnection
    from surge.gateway.routes.router import Router

    settings = validate_settings({
        "data_dir": data_dir,
        "gateway": {"processes": 1, "access_log": {"enabled": False}},
        # Port 9 (discard) is never connected to: every upstream connection is in memory.
        "pools": {"app": {"targets": ["127.0.0.1:9"], "workers": SLOTS}},
        "routes": [{"prefix": "/", "proxy": {"pool": "app"}}],
    })
    components = Components()
    router = Router(await build_routes(settings, None, components))
    server = GatewayServer(Limits.from_settings(settings.gateway, 1000), router,
                           AccessLog(settings.gateway.access_log))
    pool = components.proxy.pools["app"]
    idle = pool.connections[pool.targets[0]].idle
    upstreams = []
    for _ in range(SLOTS):
        upstream = UpstreamConnection()
        upstream.connection_made(MemoryTransport(("127.0.0.1", 9), []))
        idle.append(upstream)
        upstreams.append(upstream)
    answered: list[MemoryTransport] = []
    for i in range(clients):
        client = HttpConnection(server)
        transport = MemoryTransport((f"127.0.0.{1 + i // 20000}", 1024 + i % 20000),
                                    answered)
        transport.client = client
        client.connection_made(transport)
        client.data_received(request)
    best = float("inf")
    per_round = max(1, requests // ROUNDS)
    for _ in range(ROUNDS):
        started, proxied = time.process_time(), 0
        while proxied < per_round:
            for upstream in upstreams:  # each target worker answers its request
                if upstream.response is not None and not upstream.response.complete:
                    upstream.data_received(RESPONSE)
                    proxied += 1
            ready, answered[:] = answered[:], []
            for transport in ready:  # a client with its answer sends the next request
                transport.written.clear()
                transport.client.data_received(request)
            if request is not REQUEST:
                await asyncio.sleep(0)  # a request with a body is handled in a task
        best = min(best, (time.process_time() - started) / proxied * 1e6)
        await asyncio.sleep(0)  # let the loop run what the round scheduled
    stats = pool.stats()
    if stats["gateway_502"] or stats["retries"]:
        raise SystemExit(f"requests left the in-memory path: {stats}")
    return best


def run_in(tree: Path, requests: int, clients: int, body: int) -> float:
    """``measure`` in a fresh interpreter importing ``surge`` from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    out = subprocess.run([sys.executable, __file__, "--measure", str(requests),
                          "--clients", str(clients), "--body", str(body)], env=env, cwd=tree,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="HEAD~1", help="git revision to compare with")
    parser.add_argument("--requests", type=int, default=280_000)
    parser.add_argument("--clients", type=int, default=100,
                        help="client connections, each with one request outstanding")
    parser.add_argument("--body", type=int, default=0,
                        help="bytes of request body: a POST instead of a GET (default 0)")
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        import uvloop

        import surge

        here = Path.cwd().resolve()
        assert Path(surge.__file__).resolve().is_relative_to(here), (surge.__file__, here)

        request = post_with_body(args.body) if args.body else REQUEST
        with tempfile.TemporaryDirectory() as data_dir:
            print(uvloop.run(measure(args.measure, data_dir, args.clients, request)))
        return
    with tempfile.TemporaryDirectory(prefix="surge-hotpath-") as scratch:
        reference = Path(scratch) / "reference"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q",
                        str(reference), args.against], check=True)
        try:
            rows = []
            for name, tree in (("this checkout", REPO), (args.against, reference)):
                rows.append((name, run_in(tree, args.requests, args.clients, args.body)))
                print(f"  {name:20} {rows[-1][1]:6.2f} µs per proxied request", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(reference)], check=False)
    (_, now), (_, before) = rows
    print(f"\nPython per proxied request: {now:.2f} µs here, {before:.2f} µs at "
          f"{args.against} ({now / before:.2f}×)")


if __name__ == "__main__":
    main()
