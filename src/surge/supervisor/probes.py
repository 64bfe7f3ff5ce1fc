"""Liveness checks: one HTTP GET (status line only) or the age of a heartbeat file."""

from __future__ import annotations

import asyncio
import os
import time

from surge.supervisor.specs import HeartbeatProbe, HttpProbe, status_matches


async def http_status(host: str, port: int, path: str, timeout: float) -> int | None:
    """The status code of ``GET path``, or None if nothing answered within ``timeout``."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: surge-supervisor\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            status_line = await reader.readline()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return None
    finally:
        if writer is not None:
            writer.close()
    parts = status_line.split()
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


async def http_probe_ok(probe: HttpProbe, timeout: float) -> bool:
    status = await http_status(probe.host, probe.port, probe.path, timeout)
    return status is not None and status_matches(status, probe.success_codes)


def heartbeat_age(probe: HeartbeatProbe, now: float | None = None) -> float | None:
    """Seconds since the child last touched its heartbeat file (None: never touched)."""
    try:
        modified = os.stat(probe.path).st_mtime
    except FileNotFoundError:
        return None
    return (time.time() if now is None else now) - modified
