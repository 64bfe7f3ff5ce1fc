"""The life of one message, as a pure, clock-injected state machine.

```
            delay elapsed                receive                      delete
 DELAYED ───────────────► VISIBLE ─────────────────► IN_FLIGHT ─────────────► DELETED
                            ▲  │  ◄──────────────────    │
                            │  │  visibility expired /   │ receive past maxReceiveCount
                            │  │  visibility set to 0    ▼   (from VISIBLE)
                            │  └───────────────────► DEAD_LETTERED
                            └── (any live state) ──► EXPIRED (retention) / PURGED
```

Time-driven moves (a delay elapsing, a visibility timeout running out) are applied lazily by
``settle(now)``; nothing here reads a clock or touches storage. Every move goes through
``_move``, the one place an illegal transition fails.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    DELAYED = "delayed"
    VISIBLE = "visible"
    IN_FLIGHT = "in_flight"
    DELETED = "deleted"
    DEAD_LETTERED = "dead_lettered"
    EXPIRED = "expired"
    PURGED = "purged"


class Event(enum.Enum):
    DELAY_ELAPSED = "delay_elapsed"
    RECEIVE = "receive"
    VISIBILITY_EXPIRED = "visibility_expired"
    CHANGE_VISIBILITY = "change_visibility"
    RELEASE = "release"  # visibility changed to 0
    DELETE = "delete"
    DEAD_LETTER = "dead_letter"
    EXPIRE = "expire"
    PURGE = "purge"


_LIVE = (State.DELAYED, State.VISIBLE, State.IN_FLIGHT)

TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.DELAYED, Event.DELAY_ELAPSED): State.VISIBLE,
    (State.VISIBLE, Event.RECEIVE): State.IN_FLIGHT,
    (State.VISIBLE, Event.DEAD_LETTER): State.DEAD_LETTERED,
    (State.IN_FLIGHT, Event.VISIBILITY_EXPIRED): State.VISIBLE,
    (State.IN_FLIGHT, Event.CHANGE_VISIBILITY): State.IN_FLIGHT,
    (State.IN_FLIGHT, Event.RELEASE): State.VISIBLE,
    (State.IN_FLIGHT, Event.DELETE): State.DELETED,
    # A receipt handle stays valid for deletion after the visibility timeout ran out (SQS).
    (State.VISIBLE, Event.DELETE): State.DELETED,
    **{(state, Event.EXPIRE): State.EXPIRED for state in _LIVE},
    **{(state, Event.PURGE): State.PURGED for state in _LIVE},
}

TERMINAL = frozenset({State.DELETED, State.DEAD_LETTERED, State.EXPIRED, State.PURGED})


class IllegalTransition(Exception):
    """A move the state table does not allow (a bug in the caller, or a stale request)."""

    def __init__(self, state: State, event: Event) -> None:
        self.state = state
        self.event = event
        super().__init__(f"cannot {event.value} a message that is {state.value}")


@dataclass(slots=True)
class Lifecycle:
    """The mutable lifecycle fields of one message. Times are milliseconds since the epoch."""

    sent_at: int
    visible_at: int  # when a DELAYED or IN_FLIGHT message becomes VISIBLE
    state: State = State.VISIBLE
    receive_count: int = 0
    first_receive_at: int | None = None
    receipt_token: int = 0  # bumped by every receive; a receipt handle names one token

    @classmethod
    def sent(cls, now: int, delay_ms: int) -> Lifecycle:
        if delay_ms > 0:
            return cls(sent_at=now, visible_at=now + delay_ms, state=State.DELAYED)
        return cls(sent_at=now, visible_at=now)

    def _move(self, event: Event) -> None:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise IllegalTransition(self.state, event) from None

    def settle(self, now: int) -> State:
        """Apply the moves time has made (delay elapsed, visibility expired) as of ``now``."""
        if now >= self.visible_at:
            if self.state is State.DELAYED:
                self._move(Event.DELAY_ELAPSED)
            elif self.state is State.IN_FLIGHT:
                self._move(Event.VISIBILITY_EXPIRED)
        return self.state

    def is_expired(self, now: int, retention_ms: int) -> bool:
        return now >= self.sent_at + retention_ms

    def would_dead_letter(self, max_receive_count: int | None) -> bool:
        """SQS moves a message when a receive would take its count past maxReceiveCount."""
        return max_receive_count is not None and self.receive_count >= max_receive_count

    def receive(self, now: int, visibility_ms: int) -> int:
        """Hand the message out; returns the new receipt token."""
        self.settle(now)
        self._move(Event.RECEIVE)
        self.receive_count += 1
        if self.first_receive_at is None:
            self.first_receive_at = now
        self.visible_at = now + visibility_ms
        self.receipt_token += 1
        return self.receipt_token

    def change_visibility(self, now: int, visibility_ms: int) -> None:
        self.settle(now)
        if visibility_ms == 0:
            self._move(Event.RELEASE)
            self.visible_at = now
        else:
            self._move(Event.CHANGE_VISIBILITY)
            self.visible_at = now + visibility_ms

    def delete(self, now: int) -> None:
        self.settle(now)
        self._move(Event.DELETE)

    def dead_letter(self, now: int) -> None:
        self.settle(now)
        self._move(Event.DEAD_LETTER)

    def expire(self) -> None:
        self._move(Event.EXPIRE)

    def purge(self) -> None:
        self._move(Event.PURGE)
