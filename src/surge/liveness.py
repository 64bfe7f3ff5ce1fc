"""Liveness heartbeat files: a child touches its file every second from its event loop.

The supervisor names the file in ``SURGE_HEARTBEAT_FILE`` and judges a child hung when the
file goes stale. Touching from the event loop (not a thread) is the point: a loop that is
stuck stops touching. Gateways need this as much as workers: their port is shared
(SO_REUSEPORT), so probing it may be answered by a sibling process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

HEARTBEAT_FILE_ENV = "SURGE_HEARTBEAT_FILE"
HEARTBEAT_INTERVAL = 1.0


def heartbeat_file_from_env() -> Path | None:
    named = os.environ.get(HEARTBEAT_FILE_ENV)
    return Path(named) if named else None


async def touch_forever(path: Path, interval: float = HEARTBEAT_INTERVAL) -> None:
    """Touch ``path`` every ``interval`` seconds until cancelled; remove it on the way out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        while True:
            path.touch()
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
