"""The access log: one JSON object per line, buffered so a busy process makes one write per
sweep tick (or per 64 KiB), not one syscall per request.

Fields: time, client, method, path, status, bytes, duration, and what the handler adds
(``target``, ``target_time`` for the proxy). Lines are written whole with O_APPEND, so
several gateway processes can share one file.
"""

from __future__ import annotations

import os
import sys
import time

import orjson

from surge.config.settings import AccessLogSettings

FLUSH_AT = 64 * 1024


class AccessLog:
    def __init__(self, settings: AccessLogSettings) -> None:
        self.enabled = settings.enabled
        self.skip_paths = frozenset(settings.skip_paths)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._fd: int | None = None
        self._own_fd = False
        if self.enabled:
            if settings.path == "-":
                self._fd = sys.stdout.fileno()
            else:
                self._fd = os.open(settings.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                self._own_fd = True

    def wants(self, path: str) -> bool:
        return self.enabled and path not in self.skip_paths

    def record(self, fields: dict[str, object]) -> None:
        line = orjson.dumps(fields) + b"\n"
        self._buffer.append(line)
        self._buffered += len(line)
        if self._buffered >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if not self._buffer or self._fd is None:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except BlockingIOError:
            # stdout is a full pipe: drop the rest rather than stall every connection.
            return
        except OSError:
            return

    def close(self) -> None:
        self.flush()
        if self._own_fd and self._fd is not None:
            os.close(self._fd)
        self._fd = None


def now_field() -> float:
    return round(time.time(), 3)
