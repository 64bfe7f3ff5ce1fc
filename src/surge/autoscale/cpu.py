"""CPU utilization of an instance: the CPU time of its whole process tree (a pre-fork server
such as Starman does its work in forked children) per second of wall time, as a percentage
of the cores the instance can use — AWS's CPUUtilization of an instance, on one machine.

``utilization`` is pure; ``CpuMeter`` reads the process times (psutil reads
/proc/<pid>/stat) and keeps the previous sample of each instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import psutil

ProcessTimes = dict[int, float]  # pid → user + system CPU seconds


def utilization(previous: Mapping[int, float], current: Mapping[int, float], elapsed: float,
                cores: int) -> float | None:
    """Percent of ``cores`` used between two samples of a process tree, or None without a
    usable interval. A process seen only now counts from zero (it started in between); one
    gone since is left out (its last slice is lost, which only ever under-reads)."""
    if elapsed <= 0 or cores <= 0:
        return None
    used = sum(max(0.0, seconds - previous.get(pid, 0.0)) for pid, seconds in current.items())
    return 100.0 * used / elapsed / cores


def tree_times(root_pid: int) -> ProcessTimes | None:
    """CPU seconds of ``root_pid`` and all its descendants; None if the root is gone."""
    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    times: ProcessTimes = {}
    for process in processes:
        try:
            cpu = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # exited between the listing and the read
        times[process.pid] = cpu.user + cpu.system
    return times


@dataclass(slots=True)
class _Sample:
    root_pid: int
    at: float
    times: ProcessTimes


class CpuMeter:
    """Utilization per instance since its previous sample (the first sample has no value)."""

    def __init__(self) -> None:
        self._samples: dict[str, _Sample] = {}

    def sample(self, instance: str, root_pid: int, now: float, cores: int) -> float | None:
        times = tree_times(root_pid)
        previous = self._samples.get(instance)
        if times is None:
            self._samples.pop(instance, None)
            return None
        self._samples[instance] = _Sample(root_pid, now, times)
        if previous is None or previous.root_pid != root_pid:  # restarted: a new tree
            return None
        return utilization(previous.times, times, now - previous.at, cores)

    def forget_except(self, instances: set[str]) -> None:
        """Drop the samples of instances that are gone, so the meter stays bounded."""
        for name in set(self._samples) - instances:
            del self._samples[name]
