"""surge handlers for the worker benchmark (same work as celery_app.py and dramatiq_app.py)."""

from __future__ import annotations

import time
from typing import Any


def noop(payload: Any) -> None:
    return None


def sleep_10ms(payload: Any) -> None:
    time.sleep(0.01)
