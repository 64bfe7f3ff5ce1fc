"""Rendering the NYTProf profiles of a pool or task (``DATA_DIR/profiles/<name>/
nytprof.out.<pid>``) into one HTML report: ``nytprofmerge`` first when several processes
wrote one (Starman's master and workers, each per-task handler run), then ``nytprofhtml``.

A process writes its profile as it exits, so the file of one still running is incomplete
and left out (and said so): a persistent handler exits with its worker, a pool instance
when ``surge reload`` replaces it or ``surge up`` stops.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil
from rich.console import Console

from surge.profiling import ProfileError
from surge.profiling.nytprof import PROFILE_FILE_PREFIX, profile_dir
from surge.profiling.targets import PerlProfile

TOOLS_HINT = "Devel::NYTProf's tools (Debian: apt-get install libdevel-nytprof-perl)"
TOOL_TIMEOUT_SECONDS = 600.0
# A pid's process counts as the file's writer if it existed when the file last changed
# (give or take the clocks' resolution); one started later has reused the pid.
_MTIME_SLACK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class ProfileFiles:
    finished: list[Path]
    running: list[int]  # pids still writing theirs


@dataclass(frozen=True, slots=True)
class Rendered:
    index: Path
    profiles: int  # how many process profiles went into it
    running: list[int]
    cut_short: list[Path]  # left out: their processes were killed while writing


def profile_files(directory: Path) -> ProfileFiles:
    finished: list[Path] = []
    running: list[int] = []
    for path in sorted(directory.glob(f"{PROFILE_FILE_PREFIX}*")):
        pid_text = path.name.removeprefix(PROFILE_FILE_PREFIX)
        if not pid_text.isdigit():
            continue
        if still_writing(int(pid_text), path):
            running.append(int(pid_text))
        else:
            finished.append(path)
    return ProfileFiles(finished, running)


def still_writing(pid: int, path: Path) -> bool:
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped
            return False
        started = process.create_time()
        modified = path.stat().st_mtime
    except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError):
        return False
    return started <= modified + _MTIME_SLACK_SECONDS


def render(profile: PerlProfile, data_dir: str, out_dir: Path, console: Console) -> Rendered:
    directory = profile_dir(data_dir, profile.name)
    files = profile_files(directory) if directory.is_dir() else ProfileFiles([], [])
    if not files.finished:
        raise ProfileError(_nothing_to_render(profile, directory, files.running))
    tools = _tool("nytprofhtml"), _tool("nytprofmerge")
    _clear_previous_report(out_dir)
    profiles, cut_short = files.finished, []
    try:
        _render_files(profiles, profile, out_dir, tools, console)
    except ProfileError:
        # A process killed outright (kill -9, the OOM killer) left its profile cut short,
        # and the tools refuse a merge holding one: render the whole ones, say which not.
        with console.status(f"checking {len(profiles)} process profiles"):
            cut_short = [path for path in profiles if not readable(path)]
        profiles = [path for path in profiles if path not in cut_short]
        if not cut_short:
            raise
        if not profiles:
            raise ProfileError(f"every finished profile of {profile.what} in {directory} is "
                               f"cut short: its processes were killed before they could "
                               f"write it (stop them with SIGTERM)") from None
        _clear_previous_report(out_dir)
        _render_files(profiles, profile, out_dir, tools, console)
    index = out_dir / "index.html"
    if not index.is_file():
        raise ProfileError(f"nytprofhtml wrote no {index}")
    return Rendered(index, len(profiles), files.running, cut_short)


def _render_files(profiles: list[Path], profile: PerlProfile, out_dir: Path,
                  tools: tuple[str, str], console: Console) -> None:
    nytprofhtml, nytprofmerge = tools
    with tempfile.TemporaryDirectory(prefix="surge-nytprof-") as scratch:
        source = profiles[0]
        if len(profiles) > 1:
            source = Path(scratch) / "nytprof-merged.out"
            with console.status(f"merging {len(profiles)} process profiles of "
                                f"{profile.what}"):
                _run([nytprofmerge, f"--out={source}", *map(str, profiles)], scratch)
        with console.status(f"rendering the report of {profile.what} into {out_dir}"):
            _run([nytprofhtml, "--file", str(source), "--out", str(out_dir)], scratch)


def readable(path: Path) -> bool:
    """Whether NYTProf's reader takes the whole file (a profile cut short is refused)."""
    try:
        return subprocess.run(
            ["perl", "-MDevel::NYTProf::Data", "-e",
             "Devel::NYTProf::Data->new({filename => $ARGV[0], quiet => 1})", str(path)],
            stdin=subprocess.DEVNULL, capture_output=True,
            timeout=TOOL_TIMEOUT_SECONDS).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _nothing_to_render(profile: PerlProfile, directory: Path, running: list[int]) -> str:
    if running:
        return (f"no finished profile of {profile.what} in {directory} yet: "
                f"{len(running)} process(es) still running (pid {', '.join(map(str, running))})"
                f". NYTProf writes a process's profile as it exits: a pool instance's when "
                f"it is replaced (surge reload) or scaled in, a command handler's when its "
                f"worker stops; or stop surge up. Then run this again")
    return (f"no profile of {profile.what} in {directory}: nothing has run there with "
            f"profile = \"nytprof\" yet (a command handler starts with its first task)")


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ProfileError(f"{name} is not installed: it is one of {TOOLS_HINT}")
    return found


def _clear_previous_report(out_dir: Path) -> None:
    """Make room for the report: an earlier NYTProf report there is replaced (its files
    would otherwise outlive it); anything else is never deleted."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ProfileError(f"--out {out_dir}: exists and is not a directory")
    if not any(out_dir.iterdir()):
        return
    index = out_dir / "index.html"
    if index.is_file() and "NYTProf" in index.read_text(errors="replace"):
        shutil.rmtree(out_dir)
        return
    raise ProfileError(f"--out {out_dir}: holds files that are not an NYTProf report; "
                       f"name a new or empty directory")


def _run(argv: list[str], cwd: str) -> None:
    try:
        completed = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                                   capture_output=True, timeout=TOOL_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as exc:
        raise ProfileError(f"{Path(argv[0]).name} took over {TOOL_TIMEOUT_SECONDS:.0f} s") \
            from exc
    if completed.returncode != 0:
        said = (completed.stderr or completed.stdout).decode(errors="replace").strip()
        last = said.splitlines()[-1] if said else f"exit {completed.returncode}"
        raise ProfileError(f"{Path(argv[0]).name} failed: {last}")
