"""One supervised child over its whole life: start, wait until it answers, watch its
liveness, and after an unexpected exit restart it with backoff — or give up loudly.

The decisions come from ``policy``; the supervisor hears about readiness and exits through
``ChildHooks`` (a pool instance is registered as a target when ready, removed when down).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from typing import Any, Protocol

from surge.config.settings import SupervisorSettings
from surge.supervisor.logs import LogSink
from surge.supervisor.policy import ChildState, Kind, RestartPolicy, judge_liveness
from surge.supervisor.probes import heartbeat_age, http_probe_ok
from surge.supervisor.process import ChildProcess
from surge.supervisor.specs import ChildSpec, HeartbeatProbe, HttpProbe

READY_POLL_INTERVAL = 0.1  # how often a starting child is probed: readiness is on the hot path
PROBE_TIMEOUT = 2.0
HEARTBEAT_GRACE = 3.0  # a heartbeat file touched every second is late after this


class ChildHooks(Protocol):
    def spec_for(self, child: Child) -> ChildSpec:
        """A fresh spec for each start (a pool instance gets a new free port)."""
        ...

    def on_ready(self, child: Child) -> None: ...

    def on_down(self, child: Child) -> None: ...


@dataclass(frozen=True, slots=True)
class ProcessOptions:
    user: str | None
    group: str | None
    start_timeout: float  # not ready within this → killed and counted as a crash


class Child:
    def __init__(self, kind: Kind, group: str, index: int, name: str,
                 settings: SupervisorSettings, options: ProcessOptions,
                 hooks: ChildHooks, log: LogSink) -> None:
        self.kind = kind
        self.group = group
        self.index = index
        self.name = name
        self.state = ChildState.STARTING
        self.restarts = 0
        self.spec: ChildSpec | None = None
        self.process: ChildProcess | None = None
        self.started_at: float | None = None  # wall clock, for uptime
        self.healthy = False
        self.last_exit_code: int | None = None
        self.retiring = False  # drained / scaled in: will be stopped, not replaced
        self.ready_since: float | None = None  # monotonic; the autoscaler's warmup runs from it
        self._settings = settings
        self._options = options
        self._hooks = hooks
        self._log = log
        self._policy = RestartPolicy(
            settings.restart_backoff_base, settings.restart_backoff_max,
            settings.max_fast_crashes, settings.fast_crash_window,
        )
        self._stop_requested = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- control ---------------------------------------------------------------------------

    def launch(self) -> None:
        self._task = asyncio.create_task(self._life(), name=f"child {self.name}")

    @property
    def done(self) -> bool:
        return self._task is None or self._task.done()

    async def stop(self, timeout: float) -> None:
        """SIGTERM the process group, wait up to ``timeout``, then SIGKILL it."""
        self._stop_requested.set()
        if self.state not in (ChildState.FAILED, ChildState.STOPPED):
            self.state = ChildState.STOPPING
        if self.process is not None:
            self.process.signal_group(signal.SIGTERM)
            # A stopped (SIGSTOP) process acts on SIGTERM only once continued.
            self.process.signal_group(signal.SIGCONT)
        if self._task is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._log.event("stop_timeout", level="warning", child=self.name, timeout=timeout)
            if self.process is not None:
                self.process.kill_group()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.shield(self._task)
        self.state = ChildState.STOPPED

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": str(self.kind),
            "group": self.group,
            "pid": self.process.pid if self.process and self.state not in (
                ChildState.STOPPED, ChildState.FAILED, ChildState.BACKOFF) else None,
            "state": str(self.state),
            "healthy": self.healthy,
            "restarts": self.restarts,
            "uptime": round(time.time() - self.started_at, 1)
            if self.started_at and self.state in (ChildState.STARTING, ChildState.RUNNING)
            else None,
            "address": self.spec.address if self.spec else None,
            "retiring": self.retiring,
            "last_exit_code": self.last_exit_code,
        }

    # -- life ------------------------------------------------------------------------------

    async def _life(self) -> None:
        while not self._stop_requested.is_set():
            exit_code = await self._run_once()
            self.last_exit_code = exit_code
            self.healthy = False
            self.ready_since = None
            self._hooks.on_down(self)
            if self._stop_requested.is_set():
                break
            decision = self._policy.record_crash(time.monotonic())
            if decision.give_up:
                self.state = ChildState.FAILED
                self._log.event(
                    "child_failed", level="error", child=self.name, exit_code=exit_code,
                    crashes=decision.recent_crashes, window=self._settings.fast_crash_window,
                    message=f"{self.name} crashed {decision.recent_crashes} times within "
                            f"{self._settings.fast_crash_window:g}s: not restarting it",
                )
                return
            self.state = ChildState.BACKOFF
            self._log.event("child_exited", level="warning", child=self.name,
                            exit_code=exit_code, restart_in=decision.delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(decision.delay):
                    await self._stop_requested.wait()
            if not self._stop_requested.is_set():
                self.restarts += 1
        self.state = ChildState.STOPPED

    async def _run_once(self) -> int | None:
        self.spec = self._hooks.spec_for(self)
        process = ChildProcess(self.spec, self._log, user=self._options.user,
                               group=self._options.group)
        try:
            await process.start()
        except OSError as exc:
            self._log.event("child_start_failed", level="error", child=self.name,
                            argv=list(self.spec.argv), error=str(exc))
            return None
        self.process = process
        if self._stop_requested.is_set():
            # stop() ran while this (re)start was under way and signalled the old process.
            process.signal_group(signal.SIGTERM)
        self.state = ChildState.STARTING
        self.started_at = time.time()
        self._log.event("child_started", child=self.name, pid=process.pid,
                        argv=list(self.spec.argv))
        exited = asyncio.create_task(process.wait())
        try:
            if await self._until_ready(exited):
                self.state = ChildState.RUNNING
                self.healthy = True
                self.ready_since = time.monotonic()
                self._hooks.on_ready(self)
                await self._watch_liveness(exited)
            return await exited
        finally:
            # Whatever the child started in its group (Starman's or granian's workers) goes
            # with it: an orphaned worker would keep the port and answer stale requests.
            process.kill_group()
            if not exited.done():
                exited.cancel()

    async def _until_ready(self, exited: asyncio.Task[int]) -> bool:
        assert self.spec is not None and self.process is not None
        deadline = time.monotonic() + self._options.start_timeout
        if self.spec.ready_event:
            announced = asyncio.create_task(self.process.ready_event_seen.wait())
            await asyncio.wait({exited, announced}, timeout=self._options.start_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            announced.cancel()
            if not self.process.ready_event_seen.is_set():
                return self._start_failed(exited)
        probe = self.spec.probe
        if probe is None or isinstance(probe, HeartbeatProbe):
            return not exited.done()
        while not exited.done() and not self._stop_requested.is_set():
            if await http_probe_ok(probe, PROBE_TIMEOUT):
                return True
            if time.monotonic() > deadline:
                return self._start_failed(exited)
            await asyncio.wait({exited}, timeout=READY_POLL_INTERVAL)
        return False

    def _start_failed(self, exited: asyncio.Task[int]) -> bool:
        """Not ready in time (or exited first): a start that failed, counted as a crash."""
        if not exited.done() and not self._stop_requested.is_set():
            self._log.event("child_start_timeout", level="error", child=self.name,
                            timeout=self._options.start_timeout)
            assert self.process is not None
            self.process.kill_group()
        return False

    async def _watch_liveness(self, exited: asyncio.Task[int]) -> None:
        """Probe every liveness interval until the child exits; kill it when it hangs."""
        last_ok = time.monotonic()
        while not exited.done():
            await asyncio.wait({exited}, timeout=self._settings.liveness_interval)
            if exited.done() or self._stop_requested.is_set():
                return
            answered = await self._probe_once()
            now = time.monotonic()
            if answered:
                last_ok = now
            self.healthy = answered
            verdict = judge_liveness(last_ok, now, self._settings.liveness_timeout, answered)
            if verdict.kill:
                self._log.event("child_hung", level="error", child=self.name,
                                silent_for=round(now - last_ok, 1))
                assert self.process is not None
                self.process.kill_group()
                return

    async def _probe_once(self) -> bool:
        probe = self.spec.probe if self.spec else None
        if isinstance(probe, HttpProbe):
            return await http_probe_ok(probe, PROBE_TIMEOUT)
        if isinstance(probe, HeartbeatProbe):
            age = heartbeat_age(probe)
            if age is None:
                # No heartbeat yet: silent since it started (a child stuck before its first
                # beat is as hung as one that stopped beating).
                age = time.time() - (self.started_at or time.time())
            return age <= max(HEARTBEAT_GRACE, self._settings.liveness_interval)
        return True
