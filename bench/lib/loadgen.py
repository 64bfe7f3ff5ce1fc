"""Running wrk against loopback addresses and reading its summary.

Load spreads over 127.0.0.1, .2, .3 … (all reach a socket bound to 0.0.0.0) because one
destination address runs out of ephemeral ports near 28k connections. Every run is
bounded by wrk's ``-d`` and a hard timeout.
"""

from __future__ import annotations

import re
import resource
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


@dataclass
class WrkResult:
    requests: int = 0
    seconds: float = 0.0
    requests_per_second: float = 0.0
    socket_errors: dict[str, int] = field(default_factory=dict)
    non_2xx: int = 0
    extra: dict[str, str] = field(default_factory=dict)  # "key: value" lines a script printed
    # wrk --latency percentiles in ms ("50%", "99%"), of completed requests only: requests
    # over the timeout are counted in socket_errors["timeout"] instead.
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values())


def widen_port_range(low: int = 10240, high: int = 65000) -> str:
    """Widen the ephemeral port range when permitted; return what it is now. It starts above
    surge's fixed default ports (8080, 8081, 9324) so no outgoing connection holds one."""
    try:
        PORT_RANGE_FILE.write_text(f"{low} {high}\n")
    except OSError:
        pass
    return PORT_RANGE_FILE.read_text().strip()


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


_MS_PER = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> WrkResult:
    result = WrkResult()
    match = re.search(r"(\d+) requests in ([\d.]+)(m?s)", output)
    if match:
        result.requests = int(match.group(1))
        result.seconds = float(match.group(2)) / (1000 if match.group(3) == "ms" else 1)
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match:
        result.requests_per_second = float(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      output)
    if match:
        result.socket_errors = dict(zip(("connect", "read", "write", "timeout"),
                                        map(int, match.groups()), strict=True))
    for percent, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", output,
                                           re.MULTILINE):
        result.latency_ms[f"{percent}%"] = float(value) * _MS_PER[unit]
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if match:
        result.non_2xx = int(match.group(1))
    for line in output.splitlines():
        if line.startswith("surge-"):
            key, _, value = line.partition(":")
            result.extra[key.strip()] = value.strip()
    return result


def run_wrk_parallel(urls: list[str], connections: int, duration: int, threads: int = 1,
                     script: str | None = None, timeout_s: int = 10,
                     latency: bool = False) -> list[WrkResult]:
    """One wrk process per URL, all at once; each holds ``connections`` connections.
    ``latency``: wrk --latency, percentiles in ``WrkResult.latency_ms``."""
    processes = []
    for url in urls:
        argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s",
                f"--timeout={timeout_s}s", *(["--latency"] if latency else [])]
        if script:
            argv += ["-s", script]
        processes.append(subprocess.Popen([*argv, url], stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True,
                                          preexec_fn=raise_nofile))
    results = []
    for process in processes:
        output, _ = process.communicate(timeout=duration + 120)
        result = parse_wrk(output)
        if not result.requests and "requests in" not in output:
            raise RuntimeError(f"wrk failed: {output}")
        results.append(result)
    return results


def total(results: list[WrkResult]) -> WrkResult:
    combined = WrkResult()
    for result in results:
        combined.requests += result.requests
        combined.seconds = max(combined.seconds, result.seconds)
        combined.requests_per_second += result.requests_per_second
        combined.non_2xx += result.non_2xx
        for key, value in result.socket_errors.items():
            combined.socket_errors[key] = combined.socket_errors.get(key, 0) + value
        for percent, milliseconds in result.latency_ms.items():
            # Percentiles do not add up: the worst of the wrk processes (equal loads).
            combined.latency_ms[percent] = max(combined.latency_ms.get(percent, 0.0),
                                               milliseconds)
        for name, text in result.extra.items():
            if text.isdigit():
                combined.extra[name] = str(int(combined.extra.get(name, "0")) + int(text))
            else:
                combined.extra[name] = text
    return combined
