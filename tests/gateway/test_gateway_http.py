"""The HTTP server over real sockets: framing attacks, limits, timeouts, pipelining,
100-continue, chunked bodies both ways, connection reuse."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from gateway_support import Conn, Process, request, start_app_server


@pytest.fixture(scope="module")
def app() -> Iterator[Process]:
    server = start_app_server(max_header_size=1024, max_body_size=10_000, header_timeout=0.5,
                              body_timeout=0.5, keepalive_timeout=1.0)
    yield server
    server.stop()


def refused(port: int, raw: bytes) -> bytes:
    """What the server answers to ``raw`` before it closes the connection."""
    with Conn(port) as conn:
        conn.send(raw)
        return conn.rest()


@pytest.mark.parametrize("raw", [
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
    b"0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nBad Name: a\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nBad(name): a\r\n\r\n",
    b"GET /echo HTTP/1.1\r\n\r\n",
    b"GET /echo HTTP/1.1\nHost: x\n\n",
    b"NOT-HTTP\r\n\r\n",
], ids=["cl-te", "te-cl", "dup-cl", "two-cl", "signed-cl", "bad-chunk-size",
        "negative-chunk", "unknown-te", "obs-fold", "space-in-name", "paren-in-name",
        "no-host", "bare-lf", "garbage"])
def test_ambiguous_or_malformed_requests_get_400_and_close(app: Process, raw: bytes) -> None:
    answer = refused(app.port, raw)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"connection: close" in answer
    # never passed to a handler: the echo route would have answered 200
    assert b" 200 " not in answer


def test_smuggled_second_request_is_never_served(app: Process) -> None:
    smuggled = b"GET /slow?smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    raw = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s" % (5 + len(smuggled), smuggled))
    answer = refused(app.port, raw)
    assert answer.count(b"HTTP/1.1") == 1 and b"smuggled" not in answer


def test_oversized_head_is_431(app: Process) -> None:
    raw = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
    assert refused(app.port, raw).startswith(b"HTTP/1.1 431 ")
    # also when the head never completes
    raw = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 3000
    assert refused(app.port, raw).startswith(b"HTTP/1.1 431 ")
    raw = b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert refused(app.port, raw).startswith(b"HTTP/1.1 431 ")


def test_body_over_limit_is_413(app: Process) -> None:
    raw = b"POST /discard HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n"
    assert refused(app.port, raw).startswith(b"HTTP/1.1 413 ")
    chunk = b"x" * 4000
    raw = (b"POST /discard HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           + b"%x\r\n%s\r\n" % (len(chunk), chunk) * 3 + b"0\r\n\r\n")
    assert refused(app.port, raw).startswith(b"HTTP/1.1 413 ")


def test_slow_head_is_408(app: Process) -> None:
    with Conn(app.port) as conn:
        conn.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answer = conn.rest()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert 0.4 < time.monotonic() - started < 3.0


def test_slow_body_is_408(app: Process) -> None:
    with Conn(app.port) as conn:
        conn.send(b"POST /discard HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        assert conn.rest().startswith(b"HTTP/1.1 408 ")


def test_idle_keepalive_is_closed(app: Process) -> None:
    with Conn(app.port) as conn:
        conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.response()[0] == 200
        started = time.monotonic()
        assert conn.rest() == b""  # closed without a word
        assert 0.9 < time.monotonic() - started < 4.0


def test_health_keepalive_and_head(app: Process) -> None:
    with Conn(app.port) as conn:
        for _ in range(3):
            conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = conn.response()
            assert (status, body, headers["content-type"]) == (200, b"OK",
                                                               "text/plain; charset=utf-8")
        conn.send(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = conn.response(head_only=True)
        assert status == 200 and headers["content-length"] == "2"
        conn.send(b"GET /health HTTP/1.0\r\n\r\n")
        status, headers, body = conn.response()
        assert body == b"OK" and conn.rest() == b""  # HTTP/1.0 without keep-alive closes


def test_pipelined_requests_are_answered_in_order(app: Process) -> None:
    with Conn(app.port) as conn:
        conn.send(b"GET /slow?1 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                  b"GET /slow?2 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /stream?2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        bodies = [conn.response()[2] for _ in range(5)]
        assert bodies == [b"slow 1", b"OK", b"abc", b"slow 2", b"chunk 0\nchunk 1\n"]
        assert conn.rest() == b""


def test_chunked_request_and_response(app: Process) -> None:
    raw = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n")
    status, headers, body = request(app.port, raw)
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert body == b"hello world"


def test_expect_100_continue(app: Process) -> None:
    with Conn(app.port) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert conn.response()[0] == 100
        conn.send(b"hello")
        assert conn.response()[2] == b"hello"


def test_expect_100_not_sent_when_body_is_not_wanted(app: Process) -> None:
    with Conn(app.port) as conn:
        conn.send(b"POST /ignore-body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        status, headers, body = conn.response()
        assert (status, body) == (200, b"ignored")
        assert headers["connection"] == "close"  # the unread body ends the connection


def test_unknown_path_is_404_and_connection_kept(app: Process) -> None:
    with Conn(app.port) as conn:
        conn.send(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.response()[0] == 404
        conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.response()[2] == b"OK"


def test_client_disconnect_mid_body_does_not_break_server(app: Process) -> None:
    sock = socket.create_connection(("127.0.0.1", app.port))
    sock.sendall(b"POST /discard HTTP/1.1\r\nHost: x\r\nContent-Length: 9000\r\n\r\nabc")
    sock.close()
    status, _, body = request(app.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (200, b"OK")
