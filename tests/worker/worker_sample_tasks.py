"""Handlers used by the worker tests (imported by name through ``python_path``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

from surge.errors import HandlerError

calls: Counter[str] = Counter()
_lock = threading.Lock()
running = 0
max_running = 0


def reset() -> None:
    global running, max_running
    calls.clear()
    running = max_running = 0


def _count(key: str) -> None:
    with _lock:
        calls[key] += 1


def echo(payload: Any) -> Any:
    _count(str(payload.get("n")) if isinstance(payload, dict) else "echo")
    return {"echo": payload}


async def async_double(payload: Any) -> Any:
    await asyncio.sleep(0)
    _count("async")
    return payload["n"] * 2


def square_in_process(payload: Any) -> Any:
    import os

    return {"square": payload["n"] ** 2, "pid": os.getpid()}


def permanent_in_process(payload: Any) -> Any:
    raise HandlerError("bad input, never valid", permanent=True)


async def slow(payload: Any) -> Any:
    """Sleeps ``payload["seconds"]``, tracking how many run at once."""
    global running, max_running
    running += 1
    max_running = max(max_running, running)
    try:
        await asyncio.sleep(payload["seconds"])
    finally:
        running -= 1
    _count(payload.get("id", "slow"))
    return "slept"


def flaky(payload: Any) -> Any:
    """Fails until it has been called ``payload["fail_times"]`` times for this key."""
    key = payload["key"]
    _count(key)
    if calls[key] <= payload["fail_times"]:
        raise RuntimeError(f"flaky failure {calls[key]}")
    return {"after": calls[key]}


def always_fails(payload: Any) -> Any:
    _count("always")
    raise RuntimeError("always fails")


def permanent(payload: Any) -> Any:
    _count("permanent")
    raise HandlerError("cannot ever work", permanent=True)


def blocking_sleep(payload: Any) -> Any:
    time.sleep(payload["seconds"])
    return "done"


def record_execution(payload: Any) -> Any:
    """Appends the task's id to ``$SURGE_TEST_EXECUTIONS`` (one line per run, from any
    process), so a test can count how often each task really ran."""
    import os

    with open(os.environ["SURGE_TEST_EXECUTIONS"], "a") as executions:
        executions.write(f"{payload['id']}\n")
    return payload["id"]
