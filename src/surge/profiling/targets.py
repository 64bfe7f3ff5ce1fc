"""What ``surge profile NAME`` profiles, decided from ``surge up``'s state (``GET
/v1/state``) and the profile directories on disk. Pure: no I/O here.

- A Python process by its name in ``surge status`` (``gateway-1``, ``worker-images-1``,
  ``queue``, an instance of a Python pool): sampled live with py-spy.
- A pool or task name whose settings say ``profile = "nytprof"``, or an instance of such a
  pool (``web-1``: its pool's profile), or a directory under ``DATA_DIR/profiles``, found
  there without asking ``surge up``, which may be stopped (a process writes its NYTProf
  profile as it exits): rendered with nytprofhtml.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from surge.profiling import ProfileError
from surge.profiling.nytprof import NYTPROF


@dataclass(frozen=True, slots=True)
class PythonProcess:
    name: str
    pid: int
    kind: str


@dataclass(frozen=True, slots=True)
class PerlProfile:
    name: str  # the profile directory: a pool's or a task's name
    what: str  # "pool web", "task process_image"
    asked_for: str  # the NAME given (an instance of the pool, or the same)


Target = PythonProcess | PerlProfile


def unknown_name(name: str, known: Collection[str]) -> ProfileError:
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    listed = ", ".join(names) if names else "(none)"
    return ProfileError(f"no process or profile named {name!r}.{hint} Known: {listed}")


def nytprof_names(state: dict[str, Any]) -> dict[str, str]:
    """Profile name → what it profiles, for every pool and task with profile = "nytprof"."""
    names = {name: f"pool {name}" for name, pool in state.get("pools", {}).items()
             if pool.get("profile") == NYTPROF}
    for group_name, group in state.get("workers", {}).items():
        for task, profile in (group.get("profiles") or {}).items():
            if profile == NYTPROF:
                names[task] = f"task {task} (worker group {group_name})"
    return names


def resolve_on_disk(name: str, on_disk: Collection[str]) -> PerlProfile | None:
    """NAME as a profile directory on disk, found without asking ``surge up``: a pool or a
    task, or an instance of a pool (``web-1``)."""
    if name in on_disk:
        return PerlProfile(name, name, name)
    pool, _, index = name.rpartition("-")
    if index.isdigit() and pool in on_disk:
        return PerlProfile(pool, f"pool {pool}", name)
    return None


def resolve(name: str, state: dict[str, Any], on_disk: Collection[str]) -> Target:
    """The target NAME stands for in ``surge up``'s state (or on disk)."""
    found = resolve_on_disk(name, on_disk)
    if found is not None:
        return found
    profiled = nytprof_names(state)
    processes = {p["name"]: p for p in state.get("processes", [])}
    process = processes.get(name)
    if process is not None:
        pool = process.get("group", "")
        if process.get("kind") == "pool" and pool in profiled:
            return PerlProfile(pool, profiled[pool], name)
        if not process.get("pid"):
            raise ProfileError(f"{name} is not running (state {process.get('state')}); "
                               f"`surge status` shows when it is back")
        return PythonProcess(name, int(process["pid"]), str(process.get("kind", "")))
    if name in profiled:
        return PerlProfile(name, profiled[name], name)
    raise unknown_name(name, set(processes) | set(profiled) | set(on_disk))

