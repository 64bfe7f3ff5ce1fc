"""The acceptor (gateway, queue server, admin API): every queued connection is taken at the
first readiness (not one per loop turn, as libuv does), and running out of descriptors
pauses instead of spinning."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable

import pytest
import uvloop

from surge.httpkit import acceptor as acceptor_module
from surge.httpkit.acceptor import Acceptor, listening_socket
from surge.httpkit.server import (
    SimpleRequest,
    SimpleResponse,
    shutdown_simple_server,
    start_simple_server,
)


class Recorder(asyncio.Protocol):
    made: list[asyncio.BaseTransport] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Recorder.made.append(transport)


async def turns_until(done: Callable[[], bool], limit: int = 100) -> int:
    """How many turns of the event loop pass until ``done()`` (``limit`` + 1: never)."""
    for turns in range(limit + 1):
        if done():
            return turns
        await asyncio.sleep(0)  # one loop turn
    return limit + 1


def test_every_queued_connection_is_accepted_in_one_turn() -> None:
    async def scenario() -> None:
        Recorder.made = []
        listener = listening_socket("127.0.0.1", 0)
        clients = [socket.create_connection(listener.getsockname()) for _ in range(60)]
        acceptor = Acceptor(listener, Recorder)
        try:
            acceptor.start()
            turns = await turns_until(lambda: len(Recorder.made) == 60)
            # Readiness, adoption, connection_made: a few turns, not one per connection.
            assert turns <= 10, turns
        finally:
            acceptor.close()
            await asyncio.sleep(0.05)  # adoptions under way finish
            for transport in Recorder.made:
                transport.close()
            for client in clients:
                client.close()
        assert listener.fileno() == -1  # closed with the acceptor

    uvloop.run(scenario())


class RunsOutOnce(socket.socket):
    """A listening socket whose first accept fails as if the process had no descriptor left."""

    failures = 0

    def accept(self) -> tuple[socket.socket, object]:
        if self.failures == 0:
            self.failures += 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


def test_out_of_descriptors_pauses_accepting_then_resumes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acceptor_module, "PAUSE_WHEN_EXHAUSTED", 0.1)

    async def scenario() -> None:
        Recorder.made = []
        listener = RunsOutOnce(fileno=listening_socket("127.0.0.1", 0).detach())
        client = socket.create_connection(listener.getsockname())
        acceptor = Acceptor(listener, Recorder)
        try:
            acceptor.start()
            await asyncio.sleep(0.05)
            assert listener.failures == 1 and Recorder.made == []  # paused, not spinning
            await asyncio.sleep(0.2)
            assert len(Recorder.made) == 1  # resumed and took the waiting connection
        finally:
            acceptor.close()
            for transport in Recorder.made:
                transport.close()
            client.close()

    uvloop.run(scenario())


def test_servers_built_on_httpkit_accept_a_burst_at_once() -> None:
    """The queue server and the admin API: with uvloop's ``create_server`` the same burst
    took one loop turn per connection (61 turns for 60), each waiting in the backlog."""
    async def answer(request: SimpleRequest) -> SimpleResponse:
        return SimpleResponse(200, b"ok")

    async def scenario() -> None:
        server = await start_simple_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(60)]
        try:
            turns = await turns_until(lambda: len(server.connections) == 60)
            assert turns <= 10, turns
        finally:
            for client in clients:
                client.close()
            await shutdown_simple_server(server, timeout=1.0)
        assert server.connections == set() and server.sockets == ()

    uvloop.run(scenario())
