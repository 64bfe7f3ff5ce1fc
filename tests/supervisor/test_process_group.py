"""``ChildProcess``: what happens to the rest of a child's process group when it exits."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from pathlib import Path

from surge.supervisor.logs import LogSink
from surge.supervisor.policy import Kind
from surge.supervisor.process import GROUP_EXIT_GRACE, ChildProcess
from surge.supervisor.specs import ChildSpec

# A leader that exits at once on SIGTERM, as Starman's master does, and a member of its
# group (a pre-fork worker) that needs a moment to write what it writes at exit (a
# Devel::NYTProf profile).
PRE_FORK = """
trap 'exit 0' TERM
( trap 'sleep 0.5; echo finished > "$1"; exit 0' TERM
  echo started > "$1"
  while :; do sleep 0.05; done ) &
while :; do sleep 0.05; done
"""


def spawn(tmp_path: Path, script: str, *args: str) -> ChildProcess:
    spec = ChildSpec(name="prefork-1", kind=Kind.POOL, group="prefork", index=1,
                     argv=("sh", "-c", script, "sh", *args), cwd=str(tmp_path))
    return ChildProcess(spec, LogSink(io.BytesIO()))


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_sigterm_lets_the_rest_of_the_group_finish_exiting(tmp_path):
    marker = tmp_path / "worker"

    async def scenario() -> float:
        child = spawn(tmp_path, PRE_FORK, str(marker))
        await child.start()
        await until(lambda: marker.is_file())
        started = time.monotonic()
        child.signal_group(signal.SIGTERM)
        assert await child.wait() == 0
        return time.monotonic() - started

    took = asyncio.run(scenario())
    # Before: the worker was SIGKILLed as soon as the leader had exited.
    assert marker.read_text() == "finished\n"
    assert took < GROUP_EXIT_GRACE


def test_a_leader_that_dies_alone_takes_its_group_at_once(tmp_path):
    """No SIGTERM from the supervisor (a crash): what the child left behind is killed
    at once, as before, not given a grace period."""
    marker = tmp_path / "worker"

    async def scenario() -> float:
        child = spawn(tmp_path, PRE_FORK.replace("trap 'exit 0' TERM", ""), str(marker))
        await child.start()
        await until(lambda: marker.is_file())
        assert child.pid is not None
        started = time.monotonic()
        os.kill(child.pid, signal.SIGKILL)  # the leader alone
        assert await child.wait() == -signal.SIGKILL
        return time.monotonic() - started

    took = asyncio.run(scenario())
    assert marker.read_text() == "started\n"
    assert took < 2.0
