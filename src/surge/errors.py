"""The package's one exception hierarchy.

Errors raised where a client library enters are wrapped here (``raise QueueUnavailable(...)
from exc``) so callers catch surge's types only. Errors that map to HTTP carry their status.
"""

from __future__ import annotations


class SurgeError(Exception):
    """Base of every error surge raises on purpose."""

    http_status: int = 500


class ConfigError(SurgeError):
    """The configuration is invalid; the message names the key, the value and what is allowed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class QueueError(SurgeError):
    """An SQS-level error: ``code`` is the AWS error code (e.g. ``QueueDoesNotExist``)."""

    http_status = 400

    def __init__(self, code: str, message: str = "", *, sender_fault: bool = True) -> None:
        self.code = code
        self.sender_fault = sender_fault
        super().__init__(f"{code}: {message}" if message else code)


class QueueUnavailable(SurgeError):
    """The queue could not be reached or did not answer in time. A request that changes
    the queue (a send) may or may not have been carried out: the connection may have broken
    after the queue stored it."""

    http_status = 503


class QueueNotReached(QueueUnavailable):
    """The request never reached the queue (no connection could be opened for it): nothing
    was stored."""


class ResultStoreError(SurgeError):
    """The task result store failed."""


class HandlerError(SurgeError):
    """A task handler failed; ``permanent`` sends the message straight to the dead-letter queue."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        self.permanent = permanent
        super().__init__(message)
