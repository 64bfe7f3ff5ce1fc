"""Worker counters, kept as plain integers for the metrics endpoint to read."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class WorkerStats:
    received: int = 0
    processed: int = 0  # handler finished successfully
    failed: int = 0  # handler raised, timed out or exited non-zero (each attempt)
    retried: int = 0  # failures handed back for another attempt
    dead_lettered: int = 0  # moved (or left for redrive) to the dead-letter queue
    duplicates: int = 0  # deliveries of an already succeeded task, acknowledged unrun
    handed_back: int = 0  # unfinished at shutdown, made visible again at once
    in_flight: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
