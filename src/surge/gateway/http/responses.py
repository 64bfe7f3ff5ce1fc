"""Bytes of response heads: status lines, the cached Date header, canned error responses."""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

SERVER_HEADER = b"server: surge\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"

_REASONS: dict[int, bytes] = {s.value: s.phrase.encode() for s in HTTPStatus}

# Headers a handler may not set (``ResponseStream.start`` leaves them out): the server frames
# the message and manages the connection itself.
MANAGED_BY_SERVER = frozenset({b"connection", b"keep-alive", b"transfer-encoding",
                               b"proxy-connection", b"upgrade"})


def reason_phrase(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


# Status lines with their standard reason, built once.
_STATUS_LINES: dict[int, bytes] = {
    status: b"HTTP/1.1 %d %s\r\n" % (status, reason) for status, reason in _REASONS.items()}


def status_line(status: int, reason: bytes | None = None) -> bytes:
    line = _STATUS_LINES.get(status) if reason is None else None
    return line or b"HTTP/1.1 %d %s\r\n" % (status, reason or reason_phrase(status))


def http_date(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)


class DateCache:
    """The ``date:`` header line, rebuilt at most once a second (by the sweep), so no
    request formats a date."""

    def __init__(self) -> None:
        self.second = 0
        self.header = b""
        self.refresh()

    def refresh(self) -> bool:
        """Rebuild when the second changed; True when it did."""
        now = int(time.time())
        if now == self.second:
            return False
        self.second = now
        self.header = b"date: " + http_date(now).encode() + b"\r\n"
        return True


def simple_response(status: int, body: bytes, date_header: bytes, *, close: bool,
                    extra: bytes = b"", head_only: bool = False) -> bytes:
    """A whole text/plain response in one buffer (errors, /health)."""
    return b"".join((
        status_line(status), SERVER_HEADER, date_header,
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: %d\r\n" % len(body), extra,
        b"connection: close\r\n\r\n" if close else b"\r\n",
        b"" if head_only else body,
    ))
