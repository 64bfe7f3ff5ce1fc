"""Responses that may not have a body, and bytes no request asked for, from a target
(``upstream.py``): through a real gateway to a scripted backend (``recording.py``), on both
request paths. A connection that could carry such bytes is never reused, so they never
become the start of another client's response; the ones seen are counted."""

from __future__ import annotations

import pytest

from .fakes import run_async
from .recording import Gateway, exchange, gateway

FORGED = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def get(path: bytes) -> bytes:
    return b"GET %b HTTP/1.1\r\nHost: app\r\n\r\n" % path


def target_stats(gw: Gateway) -> dict[str, int]:
    stats = gw.pool_stats()["targets"][gw.backend.address]
    assert isinstance(stats, dict)
    return stats


@pytest.fixture(params=[True, False], ids=["eager", "task"])
def eager(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
@run_async
async def test_a_body_written_after_a_bodiless_response_reaches_no_one(
        eager: bool, status: bytes) -> None:
    # Starman writes the body a PSGI app returns with a 204 or 304, after the head. Reused
    # at once for the next request, the connection handed those bytes (here: a whole
    # response) to that request's client.
    async with gateway(eager) as gw:
        gw.backend.scripts[b"/empty"] = [b"HTTP/1.1 %b\r\n\r\n" % status, 0.05, FORGED]
        responses = await exchange(gw.port, [get(b"/empty") + get(b"/next")])
        assert [(r.status, r.body) for r in responses] == [(int(status[:3]), b""),
                                                          (200, b"ok")]
        again = await exchange(gw.port, [get(b"/again")])
        assert [(r.status, r.body) for r in again] == [(200, b"ok")]


@pytest.mark.parametrize("announced", [b"Content-Length: 6", b"Transfer-Encoding: chunked"])
@run_async
async def test_a_body_after_a_204_in_the_same_read_is_dropped_and_counted(
        eager: bool, announced: bytes) -> None:
    async with gateway(eager) as gw:
        gw.backend.scripts[b"/empty"] = [b"HTTP/1.1 204 No Content\r\n%b\r\n\r\nforged"
                                         % announced]
        responses = await exchange(gw.port, [get(b"/empty"), get(b"/next")])
        assert [(r.status, r.body) for r in responses] == [(204, b""), (200, b"ok")]
        assert target_stats(gw)["connections_out_of_step"] == 1


@run_async
async def test_bytes_after_a_complete_response_close_its_connection(eager: bool) -> None:
    async with gateway(eager) as gw:
        gw.backend.scripts[b"/long"] = [OK + b"tail"]
        responses = await exchange(gw.port, [get(b"/long"), get(b"/next")])
        assert [(r.status, r.body) for r in responses] == [(200, b"ok"), (200, b"ok")]
        assert target_stats(gw)["connections_out_of_step"] == 1


@run_async
async def test_a_second_response_in_the_same_read_is_502(eager: bool) -> None:
    async with gateway(eager) as gw:
        gw.backend.scripts[b"/two"] = [b"HTTP/1.1 204 No Content\r\n\r\n" + FORGED]
        responses = await exchange(gw.port, [get(b"/two"), get(b"/next")])
        assert [r.status for r in responses] == [502, 200]
        assert b"forged" not in b"".join(r.body for r in responses)
        assert target_stats(gw)["connections_out_of_step"] == 1


@pytest.mark.parametrize("informational", [
    b"HTTP/1.1 199 Odd\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nforged\r\n0\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nContent-Length: 6\r\n\r\nforged",
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
])
@run_async
async def test_a_1xx_with_a_body_or_an_unasked_101_is_502(eager: bool,
                                                          informational: bytes) -> None:
    async with gateway(eager) as gw:
        gw.backend.scripts[b"/odd"] = [informational + OK]
        responses = await exchange(gw.port, [get(b"/odd"), get(b"/next")])
        assert [(r.status, r.body) for r in responses] == [(502, b"502 Bad Gateway\n"),
                                                          (200, b"ok")]


@run_async
async def test_early_hints_are_skipped(eager: bool) -> None:
    async with gateway(eager) as gw:
        gw.backend.scripts[b"/hints"] = [b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
                                         0.02, OK]
        responses = await exchange(gw.port, [get(b"/hints"), get(b"/next")])
        assert [(r.status, r.body) for r in responses] == [(200, b"ok"), (200, b"ok")]
        assert b"link" not in responses[0].headers
        assert target_stats(gw)["connections_out_of_step"] == 0
