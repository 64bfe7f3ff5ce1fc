"""Listening sockets, and accepting connections from them: every pending one each time the
listener is readable, as nginx's ``multi_accept on``. Used by the gateway and by the
servers built on ``httpkit.server`` (the queue server, the admin API).

libuv (1.45 and later, under uvloop's ``create_server``) accepts one connection per turn of
the event loop. A busy server's turn handles hundreds of ready sockets and lasts
milliseconds, so new connections piled up in the listen backlog: with 1,000 clients on a
saturated gateway, about 280 waited there, drained at ~170 a second, and wrk saw a p99 of
1 s and requests timing out, while no request inside the gateway took over 0.5 s. Here the
listening socket is watched with ``add_reader`` and drained up to ``MAX_ACCEPTS_PER_WAKE``
connections at a time; each accepted socket is handed to uvloop as a transport.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

# Bounded so a flood of connections cannot keep the loop from the requests it already has.
MAX_ACCEPTS_PER_WAKE = 512
# Out of descriptors or memory: the pending connection stays queued and the listener stays
# readable, so accepting pauses this long instead of spinning.
PAUSE_WHEN_EXHAUSTED = 0.5
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def listening_socket(host: str, port: int, *, reuse_port: bool = False,
                     backlog: int = 2048) -> socket.socket:
    """A non-blocking socket listening on ``host:port`` (an IP address or a name that
    resolves to one; port 0: a free one)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Acceptor:
    def __init__(self, sock: socket.socket,
                 protocol_factory: Callable[[], asyncio.BaseProtocol]) -> None:
        self._sock = sock
        self._protocol_factory = protocol_factory
        self._loop = asyncio.get_running_loop()
        self._adopting: set[asyncio.Task[object]] = set()
        self._watching = False
        self._closed = False
        sock.setblocking(False)

    def start(self) -> None:
        if not self._watching and not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._accept_pending)
            self._watching = True

    def close(self) -> None:
        """Stop accepting and close the listening socket (connections already accepted
        are not touched)."""
        if self._closed:
            return
        self._closed = True
        self._stop_watching()
        self._sock.close()

    def _stop_watching(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._sock.fileno())
            self._watching = False

    def _accept_pending(self) -> None:
        for _ in range(MAX_ACCEPTS_PER_WAKE):
            try:
                connection, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # the backlog is empty
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    log.warning("cannot accept connections (%s); pausing %.1fs",
                                exc.strerror, PAUSE_WHEN_EXHAUSTED)
                    self._stop_watching()
                    self._loop.call_later(PAUSE_WHEN_EXHAUSTED, self.start)
                    return
                raise
            self._adopt(connection)

    def _adopt(self, connection: socket.socket) -> None:
        # The transport and the protocol exist once this task's first step has run (the
        # next loop turn); the task then only waits for connection_made.
        task: asyncio.Task[object] = self._loop.create_task(
            self._loop.connect_accepted_socket(self._protocol_factory, connection))
        self._adopting.add(task)
        task.add_done_callback(self._adopted)

    def _adopted(self, task: asyncio.Task[object]) -> None:
        self._adopting.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.debug("an accepted connection could not be set up: %s", error)
