"""The supervisor's one output: JSON lines on standard output, one per event or per line a
child printed, each tagged with the process name (``{"proc": "gateway-1", "line": …}``)."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

import orjson


class LogSink:
    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer

    def child_lines(self, proc: str, stream: str, lines: list[str]) -> None:
        """Lines a child printed, written in one go (a busy gateway's access log is many
        lines per read, and one write per line would make the relay the bottleneck)."""
        now = round(time.time(), 3)
        self._write_raw(b"".join(
            orjson.dumps({"ts": now, "proc": proc, "stream": stream, "line": line}) + b"\n"
            for line in lines
        ))

    def event(self, event: str, level: str = "info", **fields: Any) -> None:
        self._write({"ts": round(time.time(), 3), "proc": "supervisor", "level": level,
                     "event": event, **fields})

    def _write(self, record: dict[str, Any]) -> None:
        self._write_raw(orjson.dumps(record, default=str) + b"\n")

    def _write_raw(self, data: bytes) -> None:
        try:
            self._stream.write(data)
            self._stream.flush()
        except (BrokenPipeError, ValueError):
            # Whoever read our output went away; supervising matters more than logging.
            pass
