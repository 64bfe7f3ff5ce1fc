"""Names surge derives for queues, shared by the supervisor (which creates them) and the
workers (which dead-letter into them), so both always agree."""

from __future__ import annotations

from surge.config.settings import QueueSettings


def default_dead_letter_queue(name: str) -> str:
    """``<name>-dlq``; ``<base>-dlq.fifo`` for a FIFO queue, whose DLQ must be FIFO too."""
    if name.endswith(".fifo"):
        return f"{name.removesuffix('.fifo')}-dlq.fifo"
    return f"{name}-dlq"


def dead_letter_queue_name(name: str, queue: QueueSettings) -> str | None:
    """The dead-letter queue of ``[queues.NAME]``: explicit, derived, or None without redrive."""
    if queue.max_receive_count is None:
        return None
    return queue.dead_letter_queue or default_dead_letter_queue(name)
