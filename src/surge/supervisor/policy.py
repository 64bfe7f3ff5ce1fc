"""Process-management decisions, apart from processes: restart backoff, fast-crash
accounting, desired-vs-actual reconciliation and the shutdown order.

Everything here is pure and takes the time as an argument, so it is tested exactly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class ChildState(StrEnum):
    """Life of one supervised process. ``failed`` is terminal until an operator acts."""

    STARTING = "starting"  # spawned, not yet answering its liveness check
    RUNNING = "running"
    BACKOFF = "backoff"  # exited unexpectedly, waiting to be restarted
    FAILED = "failed"  # crashed too often too fast: no more restarts
    STOPPING = "stopping"  # asked to stop (SIGTERM sent)
    STOPPED = "stopped"


class Kind(StrEnum):
    QUEUE = "queue"
    POOL = "pool"
    GATEWAY = "gateway"
    WORKER = "worker"


# Graceful shutdown: stop taking traffic first, the queue last, so that work in flight at
# every step still has somewhere to go (workers hand messages back to a live queue server).
SHUTDOWN_ORDER: tuple[Kind, ...] = (Kind.GATEWAY, Kind.WORKER, Kind.POOL, Kind.QUEUE)


@dataclass(frozen=True, slots=True)
class RestartDecision:
    give_up: bool
    delay: float  # seconds to wait before the restart (meaningless when give_up)
    recent_crashes: int


@dataclass(slots=True)
class RestartPolicy:
    """Exponential backoff over the crashes seen within ``fast_crash_window``.

    A child that keeps crashing is restarted after base, 2·base, 4·base … (capped at
    ``backoff_max``); the ``max_fast_crashes``-th crash inside the window stops the retries,
    because restarting a process that cannot start only hides the error in a loop.
    """

    backoff_base: float
    backoff_max: float
    max_fast_crashes: int
    fast_crash_window: float
    crash_times: deque[float] = field(default_factory=deque)

    def record_crash(self, now: float) -> RestartDecision:
        self.crash_times.append(now)
        while self.crash_times and self.crash_times[0] < now - self.fast_crash_window:
            self.crash_times.popleft()
        recent = len(self.crash_times)
        if recent >= self.max_fast_crashes:
            return RestartDecision(give_up=True, delay=0.0, recent_crashes=recent)
        delay = min(self.backoff_max, self.backoff_base * 2 ** (recent - 1))
        return RestartDecision(give_up=False, delay=delay, recent_crashes=recent)

    def reset(self) -> None:
        self.crash_times.clear()


@dataclass(frozen=True, slots=True)
class InstanceView:
    """What reconciliation needs to know about one instance of a group."""

    name: str
    index: int
    serving: bool  # healthy and taking traffic (pools) / running (workers)
    leaving: bool = False  # draining or stopping: no longer counts toward the desired number


@dataclass(frozen=True, slots=True)
class ReconcilePlan:
    start: int  # how many new instances to start
    retire: tuple[str, ...]  # instances to take out of service (drain, then stop)


def reconcile(desired: int, instances: Sequence[InstanceView]) -> ReconcilePlan:
    """Move a group towards ``desired`` instances.

    Leaving instances do not count. Instances that are not serving yet are retired first
    (nothing to drain, and they are the least proven), then the newest (highest index), so
    long-lived instances with warm caches stay.
    """
    staying = [instance for instance in instances if not instance.leaving]
    if len(staying) < desired:
        return ReconcilePlan(start=desired - len(staying), retire=())
    surplus = len(staying) - desired
    by_retire_preference = sorted(staying, key=lambda i: (i.serving, -i.index))
    return ReconcilePlan(start=0, retire=tuple(i.name for i in by_retire_preference[:surplus]))


def check_bounds(what: str, requested: object, minimum: int, maximum: int) -> int:
    """The requested count, or ValueError with a message that says what is allowed."""
    if isinstance(requested, bool) or not isinstance(requested, int):
        raise ValueError(f"{what} must be an integer between {minimum} and {maximum}, "
                         f"got {requested!r}")
    if not minimum <= requested <= maximum:
        raise ValueError(f"{what} must be between {minimum} and {maximum}, got {requested}")
    return requested


@dataclass(frozen=True, slots=True)
class LivenessVerdict:
    healthy: bool
    kill: bool  # unanswered for longer than the liveness timeout: hung


def judge_liveness(
    last_ok: float, now: float, timeout: float, answered: bool
) -> LivenessVerdict:
    """A child that has not answered its liveness check for ``timeout`` seconds is hung."""
    if answered:
        return LivenessVerdict(healthy=True, kill=False)
    return LivenessVerdict(healthy=False, kill=now - last_ok > timeout)


def gateway_process_count(processes: int | str, max_connections: int, cpu_count: int,
                          fd_limit: int) -> int:
    """``auto``: at least one process per core, and enough processes that each stays
    under its file-descriptor limit (kept 10 % for upstream connections and files)."""
    if isinstance(processes, int):
        return processes
    per_process = max(1, int(fd_limit * 0.9))
    needed = -(-max_connections // per_process)
    return max(cpu_count, needed, 1)
