"""The supervisor's one output: JSON lines on standard output, one per event or per line a
child printed, each tagged with the process name (``{"proc": "gateway-1", "line": …}``).
On a terminal the same records are shown as readable, coloured lines instead."""

from __future__ import annotations

import sys
import time
import zlib
from collections.abc import Callable
from typing import IO, Any

import orjson
from rich.console import Console
from rich.markup import escape

_COLOURS = ("cyan", "green", "magenta", "blue", "yellow", "bright_cyan", "bright_green",
            "bright_magenta", "bright_blue")
_LEVEL_STYLES = {"warning": "yellow", "error": "bold red"}
LineObserver = Callable[[str, str, list[str]], None]


class LogSink:
    def __init__(self, stream: IO[bytes] | None = None, *, pretty: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        if pretty is None:
            pretty = stream is None and sys.stdout.isatty()
        self._console = Console(highlight=False, soft_wrap=True) if pretty else None
        self._line_observers: list[LineObserver] = []

    def observe_lines(self, observer: LineObserver) -> None:
        """Also hand every relayed child line to ``observer(proc, stream, lines)`` (the
        autoscaler counts requests per target from the gateways' access log lines)."""
        self._line_observers.append(observer)

    def child_lines(self, proc: str, stream: str, lines: list[str]) -> None:
        """Lines a child printed, written in one go (a busy gateway's access log is many
        lines per read, and one write per line would make the relay the bottleneck)."""
        for observer in self._line_observers:
            observer(proc, stream, lines)
        if self._console is not None:
            colour = _COLOURS[zlib.crc32(proc.encode()) % len(_COLOURS)]
            for line in lines:
                self._console.print(f"[{colour}]{proc:>18}[/{colour}] │ {escape(line)}")
            return
        now = round(time.time(), 3)
        self._write_raw(b"".join(
            orjson.dumps({"ts": now, "proc": proc, "stream": stream, "line": line}) + b"\n"
            for line in lines
        ))

    def event(self, event: str, level: str = "info", **fields: Any) -> None:
        if self._console is not None:
            style = _LEVEL_STYLES.get(level, "bold")
            details = " ".join(f"{key}={value}" for key, value in fields.items())
            self._console.print(f"[{style}]{'surge':>18} │ {event}[/{style}] {escape(details)}")
            return
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
