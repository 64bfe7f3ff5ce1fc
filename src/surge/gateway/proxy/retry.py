"""When a failed attempt may be repeated, and how (pure)."""

from __future__ import annotations

from enum import Enum

from surge.gateway.proxy.errors import ProxyError, UpstreamBroken, UpstreamConnectError

# RFC 9110 §9.2.2: repeating these has the same effect as sending them once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
MAX_ATTEMPTS = 3


class Retry(Enum):
    NO = "no"  # answer the failure (or cut the response the client has begun to get)
    ON_A_NEW_CONNECTION = "new_connection"  # once more, any target, on a new connection
    ELSEWHERE = "elsewhere"  # on another target


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


def after_failure(
    failure: ProxyError,
    method: str,
    *,
    response_started: bool,
    body_replayable: bool,
    attempts: int,
    other_targets: int,
    on_new_connection: bool,
) -> Retry:
    """What to do after attempt number ``attempts`` failed with ``failure``.

    A kept-alive connection the target closed just as we reused it (its keep-alive
    timeout) is worth one more try on a new connection, on any target including this one,
    as nginx does for a cached connection — unless this attempt was that try already
    (``on_new_connection``). Otherwise only a failure before the target received or
    answered anything (refused connection, closed before a byte came back) goes to
    another target, within ``may_retry``'s rules."""
    nothing_received = isinstance(failure, UpstreamBroken) and failure.nothing_received
    if (not on_new_connection and nothing_received and isinstance(failure, UpstreamBroken)
            and failure.reused and may_retry(
                method, response_started=response_started, body_replayable=body_replayable,
                attempts=1, other_targets=1)):
        return Retry.ON_A_NEW_CONNECTION
    if (isinstance(failure, UpstreamConnectError) or nothing_received) and may_retry(
            method, response_started=response_started, body_replayable=body_replayable,
            attempts=attempts, other_targets=other_targets):
        return Retry.ELSEWHERE
    return Retry.NO
