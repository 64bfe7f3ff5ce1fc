"""``surge profile NAME``: find what NAME is (``targets.resolve``), then sample it with
py-spy or render its NYTProf profiles, and say where the result is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from surge.profiling import ProfileError
from surge.profiling.nytprof import PROFILES_DIR
from surge.profiling.pyspy import SUFFIXES, Recording, child_count, record
from surge.profiling.targets import PerlProfile, PythonProcess, resolve, resolve_on_disk

DEFAULT_SECONDS = 10
DEFAULT_RATE = 100
DEFAULT_FORMAT = "svg"
GATEWAY_KIND = "gateway"


@dataclass(frozen=True, slots=True)
class ProfileRequest:
    name: str
    data_dir: str
    seconds: int | None = None  # None: not given (py-spy options are refused for NYTProf)
    out: Path | None = None
    format: str | None = None
    rate: int | None = None
    subprocesses: bool = False
    idle: bool = False

    def py_spy_options_given(self) -> list[str]:
        given = {"--seconds": self.seconds, "--format": self.format, "--rate": self.rate,
                 "--subprocesses": self.subprocesses or None, "--idle": self.idle or None}
        return [option for option, value in given.items() if value is not None]


def profiles_on_disk(data_dir: str) -> set[str]:
    """Names with a profile directory under DATA_DIR/profiles (written by NYTProf)."""
    root = Path(data_dir) / PROFILES_DIR
    return {entry.name for entry in root.iterdir() if entry.is_dir()} if root.is_dir() else set()


def run_profile(request: ProfileRequest, admin: Callable[[], Any],
                out: Console | None = None, progress: Console | None = None) -> int:
    """Exit status of ``surge profile``; ``admin()`` makes the admin client, asked only when
    NAME is not a profile directory already on disk (surge up may be stopped)."""
    out = out or Console(soft_wrap=True)
    progress = progress or Console(stderr=True)
    on_disk = profiles_on_disk(request.data_dir)
    target = resolve_on_disk(request.name, on_disk) or \
        resolve(request.name, asyncio.run(_state(admin, on_disk)), on_disk)
    if isinstance(target, PythonProcess):
        return _sample(target, request, out, progress)
    return _render(target, request, out, progress)


async def _state(admin: Callable[[], Any], on_disk: set[str]) -> dict[str, Any]:
    from surge.supervisor.admin_client import AdminCallError

    client = admin()
    try:
        state: dict[str, Any] = await client.get("/v1/state")
        return state
    except AdminCallError as exc:
        profiles = f" (profiles on disk: {', '.join(sorted(on_disk))})" if on_disk else ""
        raise ProfileError(f"{exc}; a running process is found through surge up's admin "
                           f"API{profiles}") from exc
    finally:
        await client.close()


def _sample(target: PythonProcess, request: ProfileRequest, out: Console,
            progress: Console) -> int:
    output_format = request.format or DEFAULT_FORMAT
    # A gateway process is a small parent that forks the process serving the port (and
    # starts a new one if it dies): alone, its samples would all be the parent waiting.
    subprocesses = request.subprocesses or target.kind == GATEWAY_KIND
    recording = Recording(
        name=target.name, pid=target.pid, seconds=request.seconds or DEFAULT_SECONDS,
        output=(request.out or Path(f"{target.name}-profile{SUFFIXES[output_format]}"))
        .absolute(),
        format=output_format, rate=request.rate or DEFAULT_RATE,
        subprocesses=subprocesses, idle=request.idle)
    if not subprocesses and (children := child_count(target.pid)):
        progress.print(f"{target.name} has {children} child process(es), not sampled "
                       f"without --subprocesses", highlight=False)
    result = record(recording, progress)
    samples = "" if result.samples is None else \
        f": {result.samples} samples, {result.errors} errors"
    what = "flame graph" if output_format == "svg" else "speedscope profile"
    stopped = " (stopped early)" if result.interrupted else ""
    out.print(f"{what} of {target.name} (pid {target.pid}), {result.elapsed:.1f} s"
              f"{stopped}{samples}", highlight=False)
    out.print(str(result.output), highlight=False, soft_wrap=True)
    if result.samples == 0:
        out.print("no samples: the process was idle the whole time (--idle samples waiting "
                  "threads too)", highlight=False)
    return 0


def _render(target: PerlProfile, request: ProfileRequest, out: Console,
            progress: Console) -> int:
    from surge.profiling.nytprof_report import render

    given = request.py_spy_options_given()
    if given:
        raise ProfileError(f"{' '.join(given)}: py-spy options, but {request.name} is "
                           f"profiled by Devel::NYTProf ({target.what}, profile = "
                           f"\"nytprof\"), which covers each process's whole life")
    out_dir = (request.out or Path(f"{target.name}-nytprof")).absolute()
    rendered = render(target, request.data_dir, out_dir, progress)
    scope = "" if target.asked_for == target.name else \
        f" ({target.asked_for} is one of its instances; the report covers the pool)"
    out.print(f"NYTProf report of {target.what} from {rendered.profiles} process "
              f"profile(s){scope}", highlight=False)
    if rendered.running:
        out.print(f"left out, still running: pid {', '.join(map(str, rendered.running))} "
                  f"(NYTProf writes a profile as its process exits)", highlight=False)
    if rendered.cut_short:
        out.print(f"left out, cut short (their processes were killed): "
                  f"{', '.join(path.name for path in rendered.cut_short)}", highlight=False)
    out.print(str(rendered.index), highlight=False, soft_wrap=True)
    return 0
