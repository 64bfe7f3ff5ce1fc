"""When a failed attempt may be repeated on another target (pure)."""

from __future__ import annotations

# RFC 9110 §9.2.2: repeating these has the same effect as sending them once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
MAX_ATTEMPTS = 3


def may_retry(
    method: str,
    *,
    response_started: bool,
    body_replayable: bool,
    attempts: int,
    other_targets: int,
) -> bool:
    """Retry only an idempotent request, only while the client has seen no byte of a
    response, only when the body can be sent again (empty, buffered, or not yet read),
    and only while another target is left to try."""
    return (
        method in IDEMPOTENT_METHODS
        and not response_started
        and body_replayable
        and attempts < MAX_ATTEMPTS
        and other_targets > 0
    )
