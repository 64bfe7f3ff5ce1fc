"""The gateway's acceptor: every queued connection is taken at the first readiness (not one
per loop turn, as libuv does), and running out of descriptors pauses instead of spinning."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest
import uvloop

from surge.gateway.http import acceptor as acceptor_module
from surge.gateway.http.acceptor import Acceptor


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    return sock


class Recorder(asyncio.Protocol):
    made: list[asyncio.BaseTransport] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Recorder.made.append(transport)


def test_every_queued_connection_is_accepted_in_one_turn() -> None:
    async def scenario() -> None:
        Recorder.made = []
        listener = listening_socket()
        clients = [socket.create_connection(listener.getsockname()) for _ in range(60)]
        acceptor = Acceptor(listener, Recorder)
        try:
            acceptor.start()
            turns = 0
            while len(Recorder.made) < 60 and turns < 100:
                await asyncio.sleep(0)  # one loop turn
                turns += 1
            # Readiness, adoption, connection_made: a few turns, not one per connection.
            assert len(Recorder.made) == 60 and turns <= 10, turns
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
        listener = RunsOutOnce(fileno=listening_socket().detach())
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
