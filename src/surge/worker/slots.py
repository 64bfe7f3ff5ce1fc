"""Slot accounting: how many messages the worker may hold at once, and how many to ask for.

A message holds a slot from the moment it is received until it is settled (deleted, handed
back or dead-lettered), so in-flight messages never exceed ``concurrency`` and nothing is
received that could not start at once (a message waiting for a slot would burn its
visibility timeout).
"""

from __future__ import annotations

from dataclasses import dataclass

SQS_MAX_BATCH = 10


class SlotError(RuntimeError):
    """Slots were taken or given back beyond what exists: a bug in the caller."""


@dataclass(slots=True)
class Slots:
    concurrency: int
    in_use: int = 0

    @property
    def free(self) -> int:
        return self.concurrency - self.in_use

    def receive_size(self) -> int:
        """How many messages one receive may ask for now (0: wait for a slot)."""
        return min(self.free, SQS_MAX_BATCH)

    def take(self, count: int) -> None:
        if count < 0 or count > self.free:
            raise SlotError(f"cannot take {count} slots, {self.free} free")
        self.in_use += count

    def give_back(self, count: int = 1) -> None:
        if count < 0 or count > self.in_use:
            raise SlotError(f"cannot give back {count} slots, {self.in_use} in use")
        self.in_use -= count
