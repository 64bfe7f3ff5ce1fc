"""Sampling a running Python process with py-spy into a flame graph (SVG) or a speedscope
file, with a progress bar over the seconds it samples.

py-spy reads the target's memory through ptrace: root can, and so can the user the target
runs as when ``kernel.yama.ptrace_scope`` is 0 (at 1, Debian's and Ubuntu's default, only a
process's ancestors may), or a py-spy given CAP_SYS_PTRACE. Without it py-spy says
"Permission Denied", which ``explain_failure`` turns into those choices. It reports the
samples it took only when it is done (``Samples: N Errors: M``), so the bar follows the clock.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from surge.profiling import ProfileError

FORMATS = {"svg": "flamegraph", "speedscope": "speedscope"}  # ours → py-spy's --format
SUFFIXES = {"svg": ".svg", "speedscope": ".speedscope.json"}
WRITE_GRACE_SECONDS = 60.0  # after the sampling: py-spy folds the stacks and writes the file
_SAMPLES = re.compile(r"Samples: (\d+) Errors: (\d+)")


@dataclass(frozen=True, slots=True)
class Recording:
    """One py-spy run: whom, for how long, into what."""

    name: str
    pid: int
    seconds: int
    output: Path
    format: str = "svg"
    rate: int = 100  # samples per second
    subprocesses: bool = False
    idle: bool = False  # also sample threads that wait (an asyncio loop in epoll)


@dataclass(frozen=True, slots=True)
class RecordResult:
    output: Path
    samples: int | None  # as py-spy reports them; None if it did not
    errors: int | None
    elapsed: float
    interrupted: bool


def find_py_spy() -> str:
    """py-spy next to this Python (the virtualenv surge is installed in), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("py-spy")
    if found:
        return found
    raise ProfileError("py-spy is not installed: it comes with surge's 'profile' extra "
                       "(pip install 'surge[profile]', or the 'dev' extra)")


def record_argv(py_spy: str, recording: Recording) -> list[str]:
    argv = [py_spy, "record", "--pid", str(recording.pid),
            "--duration", str(recording.seconds), "--rate", str(recording.rate),
            "--format", FORMATS[recording.format], "--output", str(recording.output)]
    if recording.subprocesses:
        argv.append("--subprocesses")
    if recording.idle:
        argv.append("--idle")
    return argv


def samples_reported(output: str) -> tuple[int, int] | None:
    """(samples, errors) from py-spy's last words, ``Wrote … Samples: 199 Errors: 0``."""
    found = _SAMPLES.findall(output)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def explain_failure(recording: Recording, output: str, returncode: int) -> str:
    """What went wrong, in terms of what to do next; py-spy's own first error line kept."""
    who = f"{recording.name} (pid {recording.pid})"
    said = next((line.strip() for line in output.splitlines()
                 if line.strip() and not line.startswith("py-spy>")), f"exit {returncode}")
    lowered = output.lower()
    if "permission denied" in lowered or "operation not permitted" in lowered:
        return (f"py-spy may not read {who}'s memory: it needs ptrace permission. Run surge "
                f"profile as root (sudo), or as the user surge up runs as with "
                f"kernel.yama.ptrace_scope = 0 (sysctl -w kernel.yama.ptrace_scope=0), or give "
                f"py-spy CAP_SYS_PTRACE (setcap cap_sys_ptrace+ep {find_py_spy()}); in a "
                f"container, start it with --cap-add SYS_PTRACE. py-spy said: {said}")
    if "failed to find python version" in lowered:
        return (f"{who} is not a Python process, so py-spy cannot sample it. A Perl pool or "
                f"command handler is profiled by Devel::NYTProf: set profile = \"nytprof\" on "
                f"it, then `surge profile` its pool or task name")
    if "check that the process is running" in lowered or "no such process" in lowered:
        return f"{who} exited before py-spy could sample it; `surge status` shows it now"
    return f"py-spy failed on {who}: {said}"


def child_count(pid: int) -> int:
    """How many processes ``pid`` started (and still has): what ``--subprocesses`` adds."""
    try:
        return len(psutil.Process(pid).children(recursive=True))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


def check_output_path(output: Path) -> None:
    """Refuse at once what py-spy would refuse only after sampling: a file it cannot write."""
    parent = output.parent
    if output.is_dir():
        raise ProfileError(f"--out {output}: is a directory; name the file to write")
    if not parent.is_dir():
        raise ProfileError(f"--out {output}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise ProfileError(f"--out {output}: not writable")


def record(recording: Recording, console: Console) -> RecordResult:
    """Run py-spy with a progress bar; Ctrl-C stops the sampling early and keeps what it took."""
    py_spy = find_py_spy()
    check_output_path(recording.output)
    started = time.monotonic()
    interrupted = False
    with tempfile.TemporaryFile() as said:
        process = subprocess.Popen(record_argv(py_spy, recording), stdin=subprocess.DEVNULL,
                                   stdout=said, stderr=subprocess.STDOUT)
        try:
            with _progress(console) as progress:
                task = progress.add_task(
                    f"sampling {recording.name} (pid {recording.pid}) at {recording.rate} Hz",
                    total=recording.seconds)
                interrupted = _follow(process, recording, progress, task, started)
        finally:
            if process.poll() is None:  # an error of ours: py-spy must not run on
                process.kill()
                process.wait()
        said.seek(0)
        output = said.read().decode(errors="replace")
    elapsed = time.monotonic() - started
    if process.returncode != 0 and not (interrupted and recording.output.is_file()):
        raise ProfileError(explain_failure(recording, output, process.returncode))
    if not recording.output.is_file() or recording.output.stat().st_size == 0:
        raise ProfileError(f"py-spy wrote nothing to {recording.output}: {output.strip()}")
    counts = samples_reported(output)
    return RecordResult(recording.output, counts[0] if counts else None,
                        counts[1] if counts else None, elapsed, interrupted)


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed:>3.0f}/{task.total:.0f} s"),
                    TimeElapsedColumn(), console=console, transient=True)


def _follow(process: subprocess.Popen[bytes], recording: Recording, progress: Progress,
            task: TaskID, started: float) -> bool:
    """Advance the bar until py-spy exits; True if Ctrl-C cut the sampling short."""
    deadline = started + recording.seconds + WRITE_GRACE_SECONDS
    writing = False
    while process.poll() is None:
        try:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.1)
        except KeyboardInterrupt:
            # At a terminal py-spy got the same SIGINT; sent again for a detached one. It
            # stops sampling and writes what it has.
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            progress.update(task, description=f"stopped: writing {recording.output}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=WRITE_GRACE_SECONDS)
            return True
        elapsed = time.monotonic() - started
        progress.update(task, completed=min(elapsed, recording.seconds))
        if elapsed >= recording.seconds and not writing:
            writing = True
            progress.update(task, description=f"writing {recording.output}")
        if time.monotonic() > deadline:
            raise ProfileError(f"py-spy did not finish within {WRITE_GRACE_SECONDS:.0f} s of "
                               f"the end of its sampling; stopped it")
    return False
