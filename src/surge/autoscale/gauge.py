"""A named gauge read from a Prometheus text endpoint, for target tracking on any metric."""

from __future__ import annotations

import asyncio
import urllib.request

FETCH_TIMEOUT = 2.0


def gauge_value(text: str, name: str) -> float | None:
    """The sum of every sample of ``name`` (all label sets), or None when there is none."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        rest = line[len(name):]
        if rest[:1] == "{":
            rest = rest[rest.find("}") + 1:]
        elif rest[:1] not in (" ", "\t"):
            continue  # another metric whose name starts with ``name``
        fields = rest.split()
        if not fields:
            continue
        try:
            total += float(fields[0])
        except ValueError:
            continue
        seen = True
    return total if seen else None


async def fetch_gauge(url: str, name: str, timeout: float = FETCH_TIMEOUT) -> float | None:
    """None when the endpoint does not answer or lacks the gauge: no data, no action."""

    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: bytes = response.read()
        return body.decode("utf-8", "replace")

    try:
        text = await asyncio.to_thread(fetch)
    except (OSError, ValueError):
        return None
    return gauge_value(text, name)
