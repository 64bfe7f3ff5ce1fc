"""The per-connection limits of the HTTP server, taken from ``GatewaySettings``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from surge.config.settings import GatewaySettings

# Bytes of request body buffered before the client socket is paused; reading resumes once
# the handler has consumed it down to the low mark.
BODY_HIGH_WATER = 256 * 1024
BODY_LOW_WATER = 64 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_size: int = 8 * 1024
    max_body_size: int = 1024 * 1024
    header_timeout: float = 60.0
    body_timeout: float = 60.0
    body_min_rate: int = 500  # bytes/s; 0: none
    body_rate_grace: float = 20.0
    send_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    max_connections: int = 10_000  # this process's cap; beyond it a quick 503 and close

    @classmethod
    def from_settings(cls, settings: GatewaySettings, max_connections: int) -> Limits:
        return cls(
            max_header_size=settings.max_header_size,
            max_body_size=settings.max_body_size,
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            body_min_rate=settings.body_min_rate,
            body_rate_grace=settings.body_rate_grace,
            send_timeout=settings.send_timeout,
            keepalive_timeout=settings.keepalive_timeout,
            max_connections=max_connections,
        )

    def body_deadline(self, now: float, body_began: float, received: int) -> float:
        """When a body still arriving times out: ``body_timeout`` after the last read, and
        at the latest ``body_rate_grace + received / body_min_rate`` seconds after it began
        (``body_began`` moves on by the time reading was paused by us). Each byte buys only
        1/body_min_rate of a second, so a trickle runs out of time however steady it is."""
        idle = now + self.body_timeout
        if not self.body_min_rate:
            return idle
        return min(idle, body_began + self.body_rate_grace + received / self.body_min_rate)

    @property
    def sweep_interval(self) -> float:
        """How often deadlines are checked: a quarter of the shortest timeout, within
        [50 ms, 1 s], so a timeout fires at most 25 % late without a timer per request."""
        shortest = min(self.header_timeout, self.body_timeout, self.keepalive_timeout,
                       self.send_timeout,
                       self.body_rate_grace if self.body_min_rate else math.inf)
        return max(0.05, min(1.0, shortest / 4))
