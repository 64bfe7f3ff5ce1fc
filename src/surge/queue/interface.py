"""The queue interface every backend implements: SQS's own verbs, nothing more.

Backends: ``memory`` (in-process, for tests of worker logic), ``http`` (the embedded
queue server, or any SQS endpoint that needs no signing), ``aws`` (Amazon SQS through
aiobotocore) and ``redis``. Every backend passes one shared test suite.

Queues are addressed by *name*; a backend resolves and caches URLs itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message to send. ``entry_id`` is only used inside batches."""

    body: str
    delay_seconds: int | None = None
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)  # SQS MessageAttributes
    group_id: str | None = None  # FIFO only
    deduplication_id: str | None = None  # FIFO only


@dataclass(frozen=True, slots=True)
class SendResult:
    message_id: str
    md5_of_body: str
    sequence_number: str | None = None


@dataclass(frozen=True, slots=True)
class BatchFailure:
    """One failed entry of a batch call, as SQS reports it in ``Failed``."""

    index: int
    code: str
    message: str
    sender_fault: bool = True


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    md5_of_body: str
    attributes: dict[str, str] = field(default_factory=dict)  # system attributes
    message_attributes: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def receive_count(self) -> int:
        return int(self.attributes.get("ApproximateReceiveCount", "1"))


@runtime_checkable
class QueueClient(Protocol):
    """An async SQS client. Methods raise ``surge.errors.QueueError`` with the AWS error
    code for a rejected call (nothing was stored) and ``surge.errors.QueueUnavailable`` when
    the queue could not be reached or did not answer: a send may or may not have been stored
    then, unless the error is ``QueueNotReached`` (the request never left)."""

    async def create_queue(self, name: str, attributes: dict[str, str] | None = None) -> str:
        """Create (idempotently) and return the queue URL."""
        ...

    async def get_queue_url(self, name: str) -> str: ...

    async def send(self, queue: str, message: OutgoingMessage) -> SendResult: ...

    async def send_batch(
        self, queue: str, messages: list[OutgoingMessage]
    ) -> tuple[list[SendResult | None], list[BatchFailure]]:
        """Up to 10 messages. Results are index-aligned with ``messages`` (None where failed)."""
        ...

    async def receive(
        self,
        queue: str,
        max_messages: int = 1,
        wait_seconds: float = 0,
        visibility_timeout: int | None = None,
    ) -> list[ReceivedMessage]: ...

    async def delete(self, queue: str, receipt_handle: str) -> None: ...

    async def delete_batch(self, queue: str, receipt_handles: list[str]) -> list[BatchFailure]: ...

    async def change_visibility(self, queue: str, receipt_handle: str, timeout: int) -> None: ...

    async def change_visibility_batch(
        self, queue: str, entries: list[tuple[str, int]]
    ) -> list[BatchFailure]: ...

    async def get_attributes(
        self, queue: str, names: list[str] | None = None
    ) -> dict[str, str]: ...

    async def close(self) -> None: ...
