"""A task handler for the enqueue tests' workers (imported by name through ``python_path``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

runs: Counter[str] = Counter()


def count(payload: Any) -> Any:
    runs[str(payload)] += 1
    return {"ran": payload}
