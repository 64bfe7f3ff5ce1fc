"""Handlers for the redrive test, loaded by the worker as ``results.redrive_tasks:…``."""

from __future__ import annotations

from collections import Counter
from typing import Any

from surge.errors import HandlerError

calls: Counter[str] = Counter()


def fails_twice(payload: Any) -> Any:
    """Fails (to be retried) on its first two calls, then succeeds."""
    calls[payload] += 1
    if calls[payload] <= 2:
        raise RuntimeError(f"failure {calls[payload]}")
    return calls[payload]


def permanent_once(payload: Any) -> Any:
    """Fails permanently (straight to the dead-letter queue) on its first call."""
    calls[payload] += 1
    if calls[payload] == 1:
        raise HandlerError("not yet", permanent=True)
    return calls[payload]
