"""The reading side of a connection as a pure state machine (h11 style).

The parser moves a connection through these states; each state decides which deadline
applies (what the periodic sweep enforces) and an illegal move fails here, in one place.
Responding is tracked separately (``HttpConnection.active`` and ``pending``), because
pipelined requests are read while an earlier one is still being answered.
"""

from __future__ import annotations

from enum import Enum


class ReadState(Enum):
    IDLE = "idle"  # between requests: keep-alive timeout (when nothing is being answered)
    HEAD = "head"  # request line and headers arriving: header timeout
    BODY = "body"  # request body arriving: body timeout (while we are reading)
    DONE = "done"  # no more requests will be read on this connection

    # Members are singletons: identity hashing keeps the per-request table lookups in C
    # (Enum's own __hash__ is Python code, three lookups per request add up).
    __hash__ = object.__hash__


class Event(Enum):
    MESSAGE_BEGIN = "message_begin"
    HEADERS_COMPLETE = "headers_complete"
    MESSAGE_COMPLETE = "message_complete"
    STOP = "stop"  # error, close, or a request after which the connection closes

    __hash__ = object.__hash__


TRANSITIONS: dict[tuple[ReadState, Event], ReadState] = {
    (ReadState.IDLE, Event.MESSAGE_BEGIN): ReadState.HEAD,
    (ReadState.HEAD, Event.HEADERS_COMPLETE): ReadState.BODY,
    (ReadState.BODY, Event.MESSAGE_COMPLETE): ReadState.IDLE,
    (ReadState.IDLE, Event.STOP): ReadState.DONE,
    (ReadState.HEAD, Event.STOP): ReadState.DONE,
    (ReadState.BODY, Event.STOP): ReadState.DONE,
    (ReadState.DONE, Event.STOP): ReadState.DONE,
}


class IllegalTransition(RuntimeError):
    pass


def next_state(state: ReadState, event: Event) -> ReadState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"{event.value} is not allowed in state {state.value}") from None


class Expiry(Enum):
    """What happens when a connection's deadline passes."""

    NONE = "none"  # no deadline in this state
    CLOSE_IDLE = "close_idle"  # idle keep-alive: close silently
    REQUEST_TIMEOUT = "request_timeout"  # slow head or body: 408 and close


def expiry_for(state: ReadState, answering: bool, reading_paused: bool) -> Expiry:
    """Which deadline applies. While a request is being answered the connection waits on us,
    not on the client, so only a request still arriving from the client is timed."""
    if state is ReadState.HEAD:
        return Expiry.REQUEST_TIMEOUT
    if state is ReadState.BODY:
        # A paused socket is our backpressure, not a slow client.
        return Expiry.NONE if reading_paused else Expiry.REQUEST_TIMEOUT
    if state is ReadState.IDLE and not answering:
        return Expiry.CLOSE_IDLE
    return Expiry.NONE
