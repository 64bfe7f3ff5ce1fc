"""Errors of the proxy route. Each maps to the status the gateway answers with."""

from __future__ import annotations

from surge.errors import SurgeError


class ProxyError(SurgeError):
    """A request could not be proxied; ``http_status`` is what the client gets."""

    http_status = 502


class NoCapacity(ProxyError):
    """No target slot came free in time, or the wait queue is full (503 + Retry-After)."""

    http_status = 503


class UpstreamConnectError(ProxyError):
    """The target refused the connection or did not accept it within connect_timeout."""

    http_status = 502


class UpstreamBroken(ProxyError):
    """The target closed or reset the connection, or sent an unparseable response."""

    http_status = 502

    def __init__(self, message: str, *, nothing_received: bool = False,
                 reused: bool = False) -> None:
        # True when not one byte of a response arrived: the request may be retried elsewhere
        # (if idempotent), because the client has seen nothing yet.
        self.nothing_received = nothing_received
        # True when the connection had carried a request before: a kept-alive connection
        # the target closed as we reused it, worth one more try on a fresh one.
        self.reused = reused
        super().__init__(message)


class UpstreamTimeout(ProxyError):
    """The target sent nothing for read_timeout seconds."""

    http_status = 504
