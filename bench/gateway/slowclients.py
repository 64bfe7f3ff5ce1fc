"""Slow clients against `GET /`, through surge and through nginx, in front of one Starman.

    .venv/bin/python bench/gateway/slowclients.py        # ~2 minutes, prints a table

One Starman (4 workers) serves `/` (18 bytes), `/big` (20 MB) and `/upload`. In front of it,
in turn, surge's gateway (per-target limit = 4 workers) and nginx with the equivalent
configuration (bench/gateway/proxy.py's: upstream keepalive, and nginx's defaults for the
rest: proxy_request_buffering and proxy_buffering on, client_body_timeout and send_timeout
60 s, proxy_max_temp_file_size 1024m), in the order surge, nginx, surge. For each front:

  1. `GET /` with wrk alone (--connections, --idle seconds): the reference;
  2. the attack starts, from a process of its own:
       - 20 slow uploaders: a chunked POST /upload, one byte every 3 s;
       - 20 non-readers: GET /big (20 MB), a 4 KiB receive buffer, and never a read;
       - a slowloris of 2,000 connections: a request head that never ends, a header
         line every 10 s;
     each opens a new connection when the front closes its own (a 408, a reset);
  3. after --ramp seconds, `GET /` with wrk again for --duration seconds, while the
     attack goes on.

The table gives `GET /`'s p50, p99 and errors (non-2xx answers and socket errors, a
request over wrk's 2 s timeout included) in both phases, and what the attack held at the
end. Goal (issue 11): under attack, p99 under 50 ms and 0 errors through surge, no worse
than nginx. Latency percentiles are of the requests that completed; every run is bounded
in time; everything is on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.gateway.proxy import start_nginx_proxy, start_starman, start_surge
from bench.lib.loadgen import WrkResult, raise_nofile, run_wrk_parallel

BIG = 20 * 1024 * 1024

PSGI_APP = """
my $hello = 'Hello from Starman';
my $big = 'x' x BIG_SIZE;
sub {
    my $env = shift;
    my $path = $env->{PATH_INFO};
    if ($path eq '/big') {
        return [200, ['Content-Type' => 'application/octet-stream',
                      'Content-Length' => length $big], [$big]];
    }
    if ($path eq '/upload') {
        my $input = $env->{'psgi.input'};
        my $length = 0;
        while (my $read = $input->read(my $buffer, 65536)) { $length += $read; }
        return [200, ['Content-Type' => 'text/plain'], ["$length"]];
    }
    return [200, ['Content-Type' => 'text/plain', 'Content-Length' => length $hello],
            [$hello]];
};
""".replace("BIG_SIZE", str(BIG))

FRONT_ORDER = ("surge", "nginx", "surge")
TCP_ESTABLISHED = 1


@dataclass
class Run:
    front: str
    idle: WrkResult
    attacked: WrkResult
    attack: dict[str, int] = field(default_factory=dict)


# --- the attack (run in a process of its own: `slowclients.py --attack PORT …`) ----------

async def attack(port: int, uploaders: int, downloaders: int, slowloris: int,
                 duration: float) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    stop = loop.time() + duration
    counts: dict[str, int] = {}

    def count(key: str) -> None:
        counts[key] = counts.get(key, 0) + 1

    async def dripping(head: bytes, drip: bytes, interval: float, kind: str) -> None:
        """Send ``head``, then ``drip`` every ``interval``, until the front answers or
        closes; then again on a new connection."""
        while loop.time() < stop:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                count(f"{kind} connect errors")
                await asyncio.sleep(1)
                continue
            count(f"{kind} connections")
            try:
                writer.write(head)
                while loop.time() < stop:
                    try:
                        answer = await asyncio.wait_for(reader.read(4096), interval)
                    except TimeoutError:
                        writer.write(drip)
                        continue
                    count(f"{kind} {answer.split(b' ', 2)[1].decode()}" if answer.startswith(
                        b"HTTP/") else f"{kind} closed")
                    break
            except OSError:
                count(f"{kind} reset")
            finally:
                writer.close()

    async def not_reading() -> None:
        """GET /big and never read; when the front gives up on the connection, again."""
        while loop.time() < stop:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, ("127.0.0.1", port))
                await loop.sock_sendall(sock, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            except OSError:
                count("non-reader connect errors")
                sock.close()
                await asyncio.sleep(1)
                continue
            count("non-reader connections")
            while loop.time() < stop:
                await asyncio.sleep(1)
                info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
                if struct.unpack("B", info[:1])[0] != TCP_ESTABLISHED:
                    count("non-reader closed by the front")
                    break
            sock.close()

    tasks = [dripping(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                      b"1\r\na\r\n", 3.0, "uploader") for _ in range(uploaders)]
    tasks += [not_reading() for _ in range(downloaders)]

    async def loris(index: int) -> None:
        await asyncio.sleep(index * 0.001)  # 2,000 connects spread over 2 s
        await dripping(b"GET / HTTP/1.1\r\nHost: x\r\n", b"X-Loris: 1\r\n", 10.0, "slowloris")

    tasks += [loris(index) for index in range(slowloris)]
    await asyncio.gather(*tasks)
    return counts


def attack_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--attack", type=int, required=True, help="the front's port")
    parser.add_argument("--uploaders", type=int, default=20)
    parser.add_argument("--downloaders", type=int, default=20)
    parser.add_argument("--slowloris", type=int, default=2000)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    raise_nofile()
    import uvloop

    counts = uvloop.run(attack(args.attack, args.uploaders, args.downloaders, args.slowloris,
                               args.seconds))
    print(json.dumps(counts), flush=True)


# --- the bench ---------------------------------------------------------------------------

def get_root(port: int, connections: int, seconds: int) -> WrkResult:
    [result] = run_wrk_parallel([f"http://127.0.0.1:{port}/"], connections, seconds,
                                threads=2, timeout_s=2, latency=True)
    return result


def measure(front: str, port: int, args: argparse.Namespace) -> Run:
    run_wrk_parallel([f"http://127.0.0.1:{port}/"], 4, 1, timeout_s=2)  # warm up
    idle = get_root(port, args.connections, args.idle)
    _report(front, "no attack", idle)
    attacker = subprocess.Popen(
        [sys.executable, __file__, "--attack", str(port), "--uploaders", str(args.uploaders),
         "--downloaders", str(args.downloaders), "--slowloris", str(args.slowloris),
         "--seconds", str(args.ramp + args.duration + 2)],
        stdout=subprocess.PIPE, text=True, preexec_fn=raise_nofile)
    try:
        time.sleep(args.ramp)
        attacked = get_root(port, args.connections, args.duration)
        _report(front, "attack", attacked)
        output, _ = attacker.communicate(timeout=args.ramp + args.duration + 120)
    finally:
        if attacker.poll() is None:
            attacker.kill()
            attacker.wait()
    counts = json.loads(output.strip().splitlines()[-1]) if output.strip() else {}
    print(f"    attack: {counts}", flush=True)
    return Run(front, idle, attacked, counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=20, help="seconds of GET / under attack")
    parser.add_argument("--idle", type=int, default=5, help="seconds of GET / without attack")
    parser.add_argument("--ramp", type=int, default=5,
                        help="seconds between the attack's start and the measurement")
    parser.add_argument("--connections", type=int, default=10, help="wrk connections for GET /")
    parser.add_argument("--starman-workers", type=int, default=4)
    parser.add_argument("--uploaders", type=int, default=20)
    parser.add_argument("--downloaders", type=int, default=20)
    parser.add_argument("--slowloris", type=int, default=2000)
    args = parser.parse_args()
    raise_nofile()
    base = Path(tempfile.mkdtemp(prefix="surge-bench-slow-"))
    runs: list[Run] = []
    try:
        starman, address = start_starman(base, args.starman_workers, PSGI_APP)
        try:
            for front in FRONT_ORDER:
                if front == "nginx":
                    server, port = start_nginx_proxy(base / "nginx", address, 1)
                else:
                    server, port = start_surge(base / "surge", address, 1, args.starman_workers)
                try:
                    runs.append(measure(front, port, args))
                finally:
                    server.stop()
                time.sleep(1)
        finally:
            starman.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    _table(runs, args)


def _errors(result: WrkResult) -> int:
    return result.non_2xx + result.errors


def _cells(result: WrkResult) -> str:
    if not result.requests:  # every request outlived the run: nothing to take percentiles of
        return f"{'0':>8} {'no answer in the whole run':>22}"
    return (f"{result.requests_per_second:>8.0f} {result.latency_ms.get('50%', 0):>7.1f} "
            f"{result.latency_ms.get('99%', 0):>7.1f} {_errors(result):>6}")


def _goal_met(run: Run, nginx_p99: float | None) -> str:
    """Issue 11's goal for surge under attack: p99 < 50 ms, 0 errors, no worse than nginx."""
    result = run.attacked
    p99 = result.latency_ms.get("99%", 0)
    met = (result.requests > 0 and _errors(result) == 0 and p99 < 50
           and (nginx_p99 is None or p99 <= max(nginx_p99, 1.0)))
    return "yes" if met else "no"


def _report(front: str, phase: str, result: WrkResult) -> None:
    print(f"  {front:6} {phase:10} {result.requests_per_second:8.0f} req/s  "
          f"p50 {result.latency_ms.get('50%', 0):6.1f} ms  "
          f"p99 {result.latency_ms.get('99%', 0):7.1f} ms  errors {_errors(result)} "
          f"({result.non_2xx} non-2xx, {result.socket_errors})", flush=True)


def _table(runs: list[Run], args: argparse.Namespace) -> None:
    print()
    print(f"GET / with {args.connections} wrk connections; attack: {args.uploaders} slow "
          f"uploaders, {args.downloaders} non-readers of 20 MB, {args.slowloris} slowloris")
    print(f"{'front':6} {'run':>3} | {'no attack':^30} | {'under attack':^30} | goal | "
          "attack connections opened")
    print(f"{'':6} {'':>3} | {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} | "
          f"{'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} |      |")
    nginx = [run.attacked for run in runs if run.front == "nginx" and run.attacked.requests]
    nginx_p99 = max(r.latency_ms.get("99%", 0) for r in nginx) if nginx else None
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.front] = seen.get(run.front, 0) + 1
        attack = run.attack
        opened = (f"{attack.get('uploader connections', 0)} uploads "
                  f"({attack.get('uploader 408', 0)} got 408), "
                  f"{attack.get('non-reader connections', 0)} downloads "
                  f"({attack.get('non-reader closed by the front', 0)} cut), "
                  f"{attack.get('slowloris connections', 0)} loris "
                  f"({attack.get('slowloris 408', 0)} got 408)")
        goal = _goal_met(run, nginx_p99) if run.front == "surge" else ""
        print(f"{run.front:6} {seen[run.front]:>3} | {_cells(run.idle)} | "
              f"{_cells(run.attacked)} | {goal:>4} | {opened}")


if __name__ == "__main__":
    if "--attack" in sys.argv:
        attack_main(sys.argv[1:])
    else:
        main()
