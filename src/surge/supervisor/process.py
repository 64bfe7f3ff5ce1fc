"""One running child: spawned in its own process group (so a signal reaches everything it
started, e.g. Starman's or granian's workers), its output relayed line by line to the log."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time

import orjson

from surge.supervisor.logs import LogSink
from surge.supervisor.specs import ChildSpec, child_environment

_LINE_LIMIT = 1024 * 1024  # a child's single log line may be long (a traceback in JSON)
_READ_SIZE = 256 * 1024
# After a SIGTERM'd child exits: how long the rest of its group may take to exit on its own.
GROUP_EXIT_GRACE = 5.0
_PR_SET_PDEATHSIG = 1
# Looked up once in the parent: between fork and exec only a plain C call is safe.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if ``surge up`` itself dies (even by kill -9),
    so a crashed supervisor does not leave its whole process tree running. It runs after
    the privilege drop, which would otherwise clear it."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class ChildProcess:
    def __init__(self, spec: ChildSpec, log: LogSink, *, user: str | None = None,
                 group: str | None = None) -> None:
        self.spec = spec
        self._log = log
        self._user = user
        self._group = group
        self._process: asyncio.subprocess.Process | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self.ready_event_seen = asyncio.Event()  # the spec's ready_event was printed
        self._terminated = False  # its group was sent SIGTERM

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        # Privileges are dropped by subprocess itself (setgid, then setuid, in the child
        # before exec), like Starman's --user/--group; the supervisor keeps its own.
        self._process = await asyncio.create_subprocess_exec(
            *self.spec.argv,
            cwd=self.spec.cwd,
            env=child_environment(self.spec),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            user=self._user,
            group=self._group,
            preexec_fn=_die_with_parent,
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        self._pumps = [
            asyncio.create_task(self._relay(self._process.stdout, "stdout")),
            asyncio.create_task(self._relay(self._process.stderr, "stderr")),
        ]

    async def wait(self) -> int:
        """Wait for the exit, then for the output to be fully relayed; the exit code
        (negative: killed by that signal).

        asyncio's own ``Process.wait()`` also waits for the pipes to close, which never
        happens while an orphan of the child (a pre-fork worker) holds them: so the exit is
        watched through a pidfd, and what is left in the process group is killed at once —
        unless the group was sent SIGTERM: then its other members get ``GROUP_EXIT_GRACE``
        to finish exiting too. Starman's master exits on SIGTERM without waiting for its
        workers, and a worker killed while it exits loses what it writes then (a
        Devel::NYTProf profile, written from an END block).
        """
        assert self._process is not None
        await self._exited()
        if self._terminated:
            await self._group_exited(GROUP_EXIT_GRACE)
        self.kill_group()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await asyncio.gather(*self._pumps, return_exceptions=True)
        for pump in self._pumps:
            pump.cancel()
        while self._process.returncode is None:  # the child watcher reaps it any moment
            await asyncio.sleep(0.01)
        return self._process.returncode

    async def _exited(self) -> None:
        assert self._process is not None
        if self._process.returncode is not None:
            return
        try:
            pidfd = os.pidfd_open(self._process.pid)
        except (OSError, AttributeError):
            pidfd = None
        if pidfd is None:
            while self._process.returncode is None:
                await asyncio.sleep(0.05)
            return
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)

    async def _group_exited(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the child's process group to be empty."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self._process.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            await asyncio.sleep(0.02)

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the child and everything in its process group."""
        if self.pid is None:
            return
        self._terminated = self._terminated or signum == signal.SIGTERM
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def kill_group(self) -> None:
        self.signal_group(signal.SIGKILL)

    async def _relay(self, stream: asyncio.StreamReader, name: str) -> None:
        """Relay whole lines as they come, many per read; a partial line waits for its end
        (or is flushed as is once it grows past the line limit, or at exit)."""
        pending = b""
        while True:
            chunk = await stream.read(_READ_SIZE)
            if not chunk:
                if pending:
                    self._emit(name, [pending])
                return
            pending += chunk
            *complete, pending = pending.split(b"\n")
            if len(pending) > _LINE_LIMIT:
                complete.append(pending)
                pending = b""
            if complete:
                self._emit(name, complete)

    def _emit(self, name: str, lines: list[bytes]) -> None:
        if self.spec.ready_event and not self.ready_event_seen.is_set() and name == "stdout":
            for line in lines:
                if _is_event(line, self.spec.ready_event):
                    self.ready_event_seen.set()
        self._log.child_lines(self.spec.name, name,
                              [line.decode("utf-8", "replace").rstrip("\r") for line in lines])


def _is_event(line: bytes, event: str) -> bool:
    if not line.startswith(b"{") or event.encode() not in line:
        return False
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(record, dict) and record.get("event") == event
