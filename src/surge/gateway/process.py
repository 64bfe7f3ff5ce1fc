"""Several gateway processes sharing one port, and their minimal supervision.

The parent binds one listening socket *per process slot* (SO_REUSEPORT, the first on the
configured port — 0 included — the others on the port it got) and forks a child per slot.
Why the parent binds rather than each child:

* the kernel spreads new connections evenly over the slots' sockets (one shared socket
  woken in several processes spreads them unevenly, and one process could hit its
  descriptor limit first);
* a slot's socket outlives its child: when a child dies its pending connections wait in
  the socket's accept queue for the restarted child instead of being reset, and the other
  children's sockets are untouched;
* port 0 works: the port is known before any child starts.

The real supervisor is ``surge up``; this one only restarts a dead child (with a short
delay when it dies fast) and forwards SIGTERM, then waits and exits 0.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from surge.httpkit.acceptor import listening_socket

FD_HEADROOM_SHARE = 0.2  # of each process's descriptors kept for upstream sockets, files, logs
MIN_FD_HEADROOM = 256
FAST_CRASH = 1.0  # a child that dies sooner than this after its start is restarted later
RESTART_DELAY = 1.0


@dataclass(frozen=True, slots=True)
class ProcessPlan:
    processes: int
    connections_per_process: int  # the cap: beyond it a quick 503


def plan_processes(processes: int | Literal["auto"], max_connections: int, cpu_count: int,
                   nofile_limit: int) -> ProcessPlan:
    """How many processes, and each one's connection cap. ``auto``: enough processes to hold
    ``max_connections`` within each one's descriptor limit (less headroom), and at least one
    per core."""
    headroom = max(MIN_FD_HEADROOM, int(nofile_limit * FD_HEADROOM_SHARE))
    per_process_fds = max(1, nofile_limit - headroom)
    if processes == "auto":
        return ProcessPlan(max(cpu_count, math.ceil(max_connections / per_process_fds)),
                           per_process_fds)
    return ProcessPlan(processes, per_process_fds)


def set_priority(nice: int) -> str | None:
    """Run this process (and the children it forks) at scheduling priority ``nice``, as
    nginx's ``worker_priority`` does. Returns why it could not, or None. Lowering the value
    below the current one needs root or CAP_SYS_NICE."""
    if os.getpriority(os.PRIO_PROCESS, 0) == nice:
        return None
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:
        return f"{exc.strerror} (lowering it needs root or CAP_SYS_NICE)"
    return None


def raise_nofile_limit() -> int:
    """Raise the soft descriptor limit to the hard one; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def bind_listeners(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    listeners: list[socket.socket] = []
    for _ in range(count):
        sock = listening_socket(host, port, reuse_port=True, backlog=backlog)
        port = sock.getsockname()[1]  # port 0: the others share the one the first got
        listeners.append(sock)
    return listeners


ChildMain = Callable[[int, socket.socket], int]

_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)


class ProcessGroup:
    """Forks ``child_main(slot, listener)`` per listener and keeps them running."""

    def __init__(self, listeners: list[socket.socket], child_main: ChildMain) -> None:
        self.listeners = listeners
        self.child_main = child_main
        self.children: dict[int, int] = {}  # pid → slot
        self.started_at: dict[int, float] = {}  # slot → start time
        self.restart_at: dict[int, float] = {}  # slot → when to start it again

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        for slot in range(len(self.listeners)):
            self._spawn(slot)
        stopping = False
        while True:
            received = signal.sigtimedwait(_HANDLED, 0.5)
            if received is not None and received.si_signo in (signal.SIGTERM, signal.SIGINT):
                stopping = True
                self._signal_children(signal.SIGTERM)
            self._reap(restart=not stopping)
            if stopping and not self.children:
                return 0
            if not stopping:
                self._start_due()

    def _spawn(self, slot: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
                for index, sock in enumerate(self.listeners):
                    if index != slot:
                        sock.close()
                code = self.child_main(slot, self.listeners[slot])
            except BaseException as exc:
                print(f"surge gateway[{slot}]: {exc!r}", file=sys.stderr)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.children[pid] = slot
        self.started_at[slot] = time.monotonic()

    def _reap(self, restart: bool) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            slot = self.children.pop(pid, None)
            if slot is None or not restart:
                continue
            print(f"surge gateway[{slot}]: exited ({_describe(status)}); restarting",
                  file=sys.stderr, flush=True)
            lived = time.monotonic() - self.started_at.get(slot, 0.0)
            self.restart_at[slot] = time.monotonic() + (RESTART_DELAY if lived < FAST_CRASH
                                                        else 0.0)

    def _start_due(self) -> None:
        now = time.monotonic()
        for slot, when in list(self.restart_at.items()):
            if when <= now:
                del self.restart_at[slot]
                self._spawn(slot)

    def _signal_children(self, signum: int) -> None:
        for pid in self.children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"code {os.waitstatus_to_exitcode(status)}"
