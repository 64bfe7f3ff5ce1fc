"""Request smuggling and desync, through a real gateway (``GatewayServer`` and the proxy
route, on sockets) to a backend that records the exact bytes it receives
(``recording.py``).

For every framing case the backend sees the request the client sent, changed only by the
documented rewrites, or nothing at all; and the client gets exactly one response per
request. The documented rewrites (docs/internals.md, "What the gateway forwards"): header
names lower-cased; hop-by-hop fields and those ``Connection`` names dropped (Upgrade among
them); X-Forwarded-For, -Proto, -Port and X-Real-IP added; the body re-framed (its
Content-Length or chunks, never its bytes); an absolute-form target made origin-form,
with Host from its authority; trailer fields dropped. Every case runs on both request
paths: the task-free one (``start_now``) and the coroutine one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest

from .fakes import run_async
from .recording import Gateway, Message, Response, exchange, gateway

Field = tuple[bytes, bytes]
HOST = (b"host", b"app")


@dataclass(frozen=True)
class Sent:
    """What the backend must receive for one request: its request line, its fields (after
    the rewrites, before the forwarding ones) and its body."""

    line: bytes
    fields: Sequence[Field] = (HOST,)
    body: bytes = b""

    def head(self, port: int) -> bytes:
        return b"".join((
            self.line, b"\r\n",
            *(name + b": " + value + b"\r\n" for name, value in self.fields),
            b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n",
            b"x-forwarded-port: %d\r\nx-real-ip: 127.0.0.1\r\n" % port,
            b"\r\n"))


def without_framing(message: Message) -> bytes:
    """``message``'s head without the line that frames its body, checked to match it."""
    lines = message.head.split(b"\r\n")
    framing = [line for line in lines if line.startswith((b"content-length:",
                                                          b"transfer-encoding:"))]
    assert len(framing) <= 1, message.head
    if framing:
        assert framing[0] == (b"transfer-encoding: chunked" if message.chunked else
                              b"content-length: %d" % len(message.body)), message.head
        lines.remove(framing[0])
    else:
        assert not message.body
    return b"\r\n".join(lines)


def assert_forwarded(gw: Gateway, expected: Sequence[Sent]) -> None:
    assert not gw.backend.garbage, gw.backend.garbage
    seen = [(without_framing(m), m.body) for m in gw.backend.messages]
    assert seen == [(sent.head(gw.port), sent.body) for sent in expected]


def run_on_both_paths(test: Callable[..., None]) -> Callable[..., None]:
    return pytest.mark.parametrize("eager", [True, False], ids=["eager", "task"])(test)


# --- requests forwarded exactly ------------------------------------------------------------

UPGRADE_PUT = (b"PUT /doc HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
               b"Content-Length: 11\r\n\r\nhello world")
CHUNKED_POST = b"POST /a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n"
EVIL_TRAILERS = (b"Host: evil.example\r\nAuthorization: Basic ZXZpbDpldmls\r\n"
                 b"Connection: host\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n")
GET_NEXT = b"GET /next HTTP/1.1\r\nHost: app\r\n\r\n"
POST_A = b"POST /a HTTP/1.1\r\nHost: app\r\n"

FORWARDED: dict[str, tuple[list[bytes], list[Sent]]] = {
    "get": ([b"GET /a?x=1 HTTP/1.1\r\nHost: app\r\nUser-Agent: t\r\n\r\n"],
            [Sent(b"GET /a?x=1 HTTP/1.1", [HOST, (b"user-agent", b"t")])]),
    "post-length": ([b"POST /a HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello"],
                    [Sent(b"POST /a HTTP/1.1", body=b"hello")]),
    "post-chunked": ([CHUNKED_POST + b"5\r\nhello\r\n0\r\n\r\n"],
                     [Sent(b"POST /a HTTP/1.1", body=b"hello")]),
    "chunk-extensions": ([CHUNKED_POST + b"5;a=b;c=\"d\"\r\nhello\r\n0;x\r\n\r\n"],
                         [Sent(b"POST /a HTTP/1.1", body=b"hello")]),
    "chunk-size-leading-zeros": ([CHUNKED_POST + b"0005\r\nhello\r\n000\r\n\r\n"],
                                 [Sent(b"POST /a HTTP/1.1", body=b"hello")]),
    "hop-by-hop": ([b"GET /a HTTP/1.1\r\nHost: app\r\nConnection: keep-alive, X-Secret\r\n"
                    b"X-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: foo\r\n"
                    b"Proxy-Authorization: x\r\nX-Kept: 2\r\n\r\n"],
                   [Sent(b"GET /a HTTP/1.1", [HOST, (b"x-kept", b"2")])]),
    # Upgrade: the body forwarded whole, the Upgrade dropped, one response (bug 1).
    "upgrade-with-length": ([UPGRADE_PUT], [Sent(b"PUT /doc HTTP/1.1", body=b"hello world")]),
    "upgrade-with-chunks": (
        [b"PUT /doc HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"],
        [Sent(b"PUT /doc HTTP/1.1", body=b"hello world")]),
    "upgrade-without-body": (
        [b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
         b"Sec-WebSocket-Key: a2V5\r\n\r\n" + GET_NEXT],
        [Sent(b"GET /ws HTTP/1.1", [HOST, (b"sec-websocket-key", b"a2V5")]),
         Sent(b"GET /next HTTP/1.1")]),
    "upgrade-then-pipelined": ([UPGRADE_PUT + GET_NEXT + UPGRADE_PUT],
                               [Sent(b"PUT /doc HTTP/1.1", body=b"hello world"),
                                Sent(b"GET /next HTTP/1.1"),
                                Sent(b"PUT /doc HTTP/1.1", body=b"hello world")]),
    "upgrade-body-in-later-reads": ([UPGRADE_PUT[:-11], b"hello ", b"world" + GET_NEXT],
                                    [Sent(b"PUT /doc HTTP/1.1", body=b"hello world"),
                                     Sent(b"GET /next HTTP/1.1")]),
    # a smuggled request as the body of an Upgrade request stays a body
    "upgrade-body-is-a-request": (
        [b"POST /a HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
         b"Content-Length: %d\r\n\r\n%b" % (len(GET_NEXT), GET_NEXT)],
        [Sent(b"POST /a HTTP/1.1", body=GET_NEXT)]),
    "upgrade-h2c": (
        [b"POST /a HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, HTTP2-Settings\r\n"
         b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
         b"Content-Length: 3\r\n\r\nabc" + GET_NEXT],
        [Sent(b"POST /a HTTP/1.1", body=b"abc"), Sent(b"GET /next HTTP/1.1")]),
    # Trailer fields: dropped, whichever read they come in (bug 2).
    "trailers-same-read": ([CHUNKED_POST + b"3\r\nabc\r\n0\r\n" + EVIL_TRAILERS],
                           [Sent(b"POST /a HTTP/1.1", body=b"abc")]),
    "trailers-later-reads": ([CHUNKED_POST + b"3\r\nabc\r\n", b"0\r\nHost: evil.example\r\n",
                              b"Connection: host\r\n\r\n"],
                             [Sent(b"POST /a HTTP/1.1", body=b"abc")]),
    "trailers-then-pipelined": ([CHUNKED_POST + b"3\r\nabc\r\n0\r\n" + EVIL_TRAILERS
                                 + GET_NEXT],
                                [Sent(b"POST /a HTTP/1.1", body=b"abc"),
                                 Sent(b"GET /next HTTP/1.1")]),
    "upgrade-with-trailers": (
        [b"PUT /doc HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n" + EVIL_TRAILERS + GET_NEXT],
        [Sent(b"PUT /doc HTTP/1.1", body=b"abc"), Sent(b"GET /next HTTP/1.1")]),
    # Absolute-form: origin-form, Host from the URL (RFC 9112 §3.2.2).
    "absolute-form": ([b"GET http://evil.example/echo?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"],
                      [Sent(b"GET /echo?q=1 HTTP/1.1", [(b"host", b"evil.example")])]),
    "absolute-form-port-no-path": (
        [b"GET HTTPS://Evil.Example:8443 HTTP/1.1\r\nX-A: 1\r\nHost: x\r\nX-B: 2\r\n\r\n"],
        [Sent(b"GET / HTTP/1.1", [(b"x-a", b"1"), (b"host", b"Evil.Example:8443"),
                                  (b"x-b", b"2")])]),
    "absolute-form-http10-without-host": (
        [b"GET http://evil.example/a HTTP/1.0\r\n\r\n"],
        [Sent(b"GET /a HTTP/1.1", [(b"host", b"evil.example")])]),
    "absolute-form-ipv6": ([b"GET http://[::1]:81/a HTTP/1.1\r\nHost: x\r\n\r\n"],
                           [Sent(b"GET /a HTTP/1.1", [(b"host", b"[::1]:81")])]),
    # forwarding headers spelt with underscores: Starman would join them before ours
    "forwarding-lookalikes": (
        [b"GET /a HTTP/1.1\r\nHost: app\r\nX_Real_IP: 6.6.6.6\r\nX-Forwarded_Proto: https\r\n"
         b"X_Forwarded_For: 6.6.6.6\r\nX_Other: kept\r\n\r\n"],
        [Sent(b"GET /a HTTP/1.1", [HOST, (b"x_other", b"kept")])]),
    # what llhttp tolerates, forwarded in canonical form
    "leading-empty-line": ([b"\r\nGET /a HTTP/1.1\r\nHost: app\r\n\r\n"],
                           [Sent(b"GET /a HTTP/1.1")]),
    "double-space-in-request-line": ([b"GET  /a HTTP/1.1\r\nHost: app\r\n\r\n"],
                                     [Sent(b"GET /a HTTP/1.1")]),
    "length-with-spaces": ([POST_A + b"Content-Length:  5 \r\n\r\nhello"],
                           [Sent(b"POST /a HTTP/1.1", body=b"hello")]),
    "chunked-in-capitals": ([POST_A + b"Transfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n"],
                            [Sent(b"POST /a HTTP/1.1", body=b"hello")]),
    # nothing after a request that closes the connection is forwarded
    "after-connection-close": ([b"GET /a HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
                                + GET_NEXT],
                               [Sent(b"GET /a HTTP/1.1")]),
    # pipelined, in one write and one byte at a time
    "pipelined": ([b"POST /a HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello" + GET_NEXT],
                  [Sent(b"POST /a HTTP/1.1", body=b"hello"), Sent(b"GET /next HTTP/1.1")]),
}


# Trailer fields the gateway dropped (and counted) in each case.
TRAILER_FIELDS = {"trailers-same-read": 4, "trailers-later-reads": 2,
                  "trailers-then-pipelined": 4, "upgrade-with-trailers": 4}


@run_on_both_paths
@pytest.mark.parametrize("name", list(FORWARDED))
@run_async
async def test_forwarded_as_sent(name: str, eager: bool) -> None:
    parts, expected = FORWARDED[name]
    async with gateway(eager) as gw:
        responses = await exchange(gw.port, parts)
        assert [r.status for r in responses] == [200] * len(expected), responses
        assert_forwarded(gw, expected)
        assert gw.server.trailer_fields_dropped == TRAILER_FIELDS.get(name, 0)


# --- requests refused: nothing forwarded, one answer ---------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n"

REFUSED: dict[str, tuple[bytes, int]] = {
    "cl-te": (POST_A + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
              + SMUGGLED, 400),
    "te-cl": (POST_A + b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n0\r\n\r\n%b"
              % (5 + len(SMUGGLED), SMUGGLED), 400),
    "duplicate-cl": (POST_A + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    "two-cl": (POST_A + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    "cl-list": (POST_A + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    "cl-plus": (POST_A + b"Content-Length: +5\r\n\r\nhello", 400),
    "cl-minus": (POST_A + b"Content-Length: -5\r\n\r\nhello", 400),
    "cl-hex": (POST_A + b"Content-Length: 0x5\r\n\r\nhello", 400),
    "cl-space-before-colon": (POST_A + b"Content-Length : 5\r\n\r\nhello", 400),
    "cl-huge": (POST_A + b"Content-Length: 99999999999999999999999\r\n\r\nhello", 400),
    "te-xchunked": (POST_A + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    "te-chunked-identity": (POST_A + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
                            400),
    "te-identity-chunked": (POST_A + b"Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
                            400),
    "te-twice": (POST_A + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\n", 400),
    "te-space-before-colon": (POST_A + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    "te-vertical-tab": (POST_A + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", 400),
    "te-on-http10": (b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "chunk-size-not-hex": (CHUNKED_POST + b"zz\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-negative": (CHUNKED_POST + b"-5\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-huge": (CHUNKED_POST + b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-space": (CHUNKED_POST + b"5 \r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-plus": (CHUNKED_POST + b"+5\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-data-too-long": (CHUNKED_POST + b"3\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-lf-only": (CHUNKED_POST + b"5\nhello\n0\n\n", 400),
    "chunk-extension-bare-cr": (CHUNKED_POST + b"5;a\rb\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-extension-bare-lf": (CHUNKED_POST + b"5;a\nb\r\nhello\r\n0\r\n\r\n", 400),
    "lowercase-method": (b"get /a HTTP/1.1\r\nHost: app\r\n\r\n", 400),
    "tab-in-request-line": (b"GET\t/a HTTP/1.1\r\nHost: app\r\n\r\n", 400),
    "space-in-target": (b"GET /a b HTTP/1.1\r\nHost: app\r\n\r\n", 400),
    "fragment-in-target": (b"GET /public#/../admin HTTP/1.1\r\nHost: app\r\n\r\n", 400),
    "obs-fold": (b"GET /a HTTP/1.1\r\nHost: app\r\nX-A: a\r\n b\r\n\r\n", 400),
    "obs-fold-hides-cl": (POST_A + b"X-A: a\r\n Content-Length: 5\r\n\r\nhello", 400),
    "bare-lf": (b"GET /a HTTP/1.1\nHost: app\n\n", 400),
    "bare-cr": (b"GET /a HTTP/1.1\r\nHost: app\r\nX-A: a\rb\r\n\r\n", 400),
    "nul-in-value": (b"GET /a HTTP/1.1\r\nHost: app\r\nX-A: a\x00b\r\n\r\n", 400),
    "nul-in-target": (b"GET /a\x00b HTTP/1.1\r\nHost: app\r\n\r\n", 400),
    "nul-escaped-in-path": (b"GET /a%00b HTTP/1.1\r\nHost: app\r\n\r\n", 400),
    "space-in-name": (b"GET /a HTTP/1.1\r\nHost: app\r\nX A: 1\r\n\r\n", 400),
    "two-hosts": (b"GET /a HTTP/1.1\r\nHost: app\r\nHost: evil.example\r\n\r\n", 400),
    "no-host": (b"GET /a HTTP/1.1\r\n\r\n", 400),
    "host-space-before-colon": (b"GET /a HTTP/1.1\r\nHost : app\r\n\r\n", 400),
    "absolute-form-userinfo": (b"GET http://u:p@evil.example/a HTTP/1.1\r\nHost: x\r\n\r\n",
                               400),
    "absolute-form-ftp": (b"GET ftp://evil.example/a HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "authority-form": (b"GET evil.example:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "http2": (b"GET /a HTTP/2.0\r\nHost: app\r\n\r\n", 505),
    "http3": (b"GET /a HTTP/3.0\r\nHost: app\r\n\r\n", 505),
    "http12": (b"GET /a HTTP/1.2\r\nHost: app\r\n\r\n", 505),
    "http09": (b"GET /a HTTP/0.9\r\nHost: app\r\n\r\n", 505),
    "connect": (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"
                + SMUGGLED, 501),
    # the client stops before the whole body (its side closed): not forwarded, one 400
    "body-cut-short": (POST_A + b"Content-Length: 11\r\n\r\nhello", 400),
    "upgrade-body-cut-short": (UPGRADE_PUT[:-6], 400),
    "upgrade-body-never-sent": (UPGRADE_PUT[:-11], 400),
    "head-too-large": (b"GET /a HTTP/1.1\r\nHost: app\r\nX-Big: " + b"a" * 9000
                       + b"\r\n\r\n", 431),
    # llhttp refuses framing fields among trailers itself
    "trailer-content-length": (CHUNKED_POST + b"3\r\nabc\r\n0\r\nContent-Length: 40\r\n\r\n",
                               400),
    "trailer-transfer-encoding": (CHUNKED_POST + b"3\r\nabc\r\n0\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n", 400),
    "trailers-too-large": (CHUNKED_POST + b"3\r\nabc\r\n0\r\nX-Big: " + b"a" * 9000
                           + b"\r\n\r\n", 431),
}
# Answered by the gateway, the connection kept open.
KEPT: dict[str, tuple[bytes, int]] = {
    "trace": (b"TRACE /a HTTP/1.1\r\nHost: app\r\nCookie: secret\r\n\r\n", 405),
    "asterisk-form": (b"OPTIONS * HTTP/1.1\r\nHost: app\r\n\r\n", 404),
}


def assert_refused(responses: list[Response], status: int, close: bool = True) -> None:
    assert [r.status for r in responses] == [status], responses
    assert (responses[0].headers.get(b"connection") == b"close") is close


@run_on_both_paths
@pytest.mark.parametrize("name", list(REFUSED) + list(KEPT))
@run_async
async def test_refused_and_never_forwarded(name: str, eager: bool) -> None:
    raw, status = REFUSED.get(name) or KEPT[name]
    async with gateway(eager) as gw:
        assert_refused(await exchange(gw.port, [raw]), status, close=name in REFUSED)
        # after a request that was forwarded, on the same connection
        ok = b"GET /ok HTTP/1.1\r\nHost: app\r\n\r\n"
        responses = await exchange(gw.port, [ok + raw])
        assert responses[0].status == 200
        assert_refused(responses[1:], status, close=name in REFUSED)
        await asyncio.sleep(0.02)  # anything forwarded would have arrived by now
        assert_forwarded(gw, [Sent(b"GET /ok HTTP/1.1")])


@run_async
async def test_trace_reaches_a_route_that_names_it() -> None:
    async with gateway(True, methods=["GET", "TRACE"]) as gw:
        responses = await exchange(gw.port, [b"TRACE /a HTTP/1.1\r\nHost: app\r\n\r\n"])
        assert [r.status for r in responses] == [200]
        assert_forwarded(gw, [Sent(b"TRACE /a HTTP/1.1")])


# --- split reads ------------------------------------------------------------------------


SPLIT_PIPELINE = (UPGRADE_PUT + CHUNKED_POST + b"3;x=y\r\nabc\r\n0\r\nHost: evil\r\n\r\n"
                  + b"GET http://evil.example/b HTTP/1.1\r\nHost: app\r\n\r\n")
SPLIT_EXPECTED = [Sent(b"PUT /doc HTTP/1.1", body=b"hello world"),
                  Sent(b"POST /a HTTP/1.1", body=b"abc"),
                  Sent(b"GET /b HTTP/1.1", [(b"host", b"evil.example")])]


@run_on_both_paths
@run_async
async def test_a_pipeline_split_at_every_byte(eager: bool) -> None:
    async with gateway(eager) as gw:
        for cut in range(1, len(SPLIT_PIPELINE)):
            gw.backend.clear()
            parts = [SPLIT_PIPELINE[:cut], SPLIT_PIPELINE[cut:]]
            responses = await exchange(gw.port, parts, pause=0.001)
            assert [r.status for r in responses] == [200, 200, 200], (cut, responses)
            assert_forwarded(gw, SPLIT_EXPECTED)


@run_on_both_paths
@run_async
async def test_a_smuggling_attempt_split_at_every_byte(eager: bool) -> None:
    ok = b"GET /ok HTTP/1.1\r\nHost: app\r\n\r\n"
    attack = ok + REFUSED["cl-te"][0]
    async with gateway(eager) as gw:
        for cut in range(1, len(attack)):
            gw.backend.clear()
            responses = await exchange(gw.port, [attack[:cut], attack[cut:]], pause=0.001)
            assert [r.status for r in responses] == [200, 400], (cut, responses)
            assert_forwarded(gw, [Sent(b"GET /ok HTTP/1.1")])


@run_on_both_paths
@run_async
async def test_pipelined_requests_over_the_head_limit_together_are_not_431(eager: bool) -> None:
    # 303 requests of 36 bytes in 3 writes, the middle one over 8 KB and cut mid-request:
    # the limit is one head's, never that of a read holding several (bug 3).
    requests = [b"GET /pipe%04d HTTP/1.1\r\nHost: xx\r\n\r\n" % i for i in range(303)]
    assert {len(r) for r in requests} == {36}
    data = b"".join(requests)
    async with gateway(eager) as gw:
        # a pause long enough for the gateway to answer the first write's requests and
        # read the second write alone
        responses = await exchange(gw.port, [data[:1000], data[1000:10000], data[10000:]],
                                   pause=0.3)
        assert [r.status for r in responses] == [200] * 303
        assert len(gw.backend.messages) == 303
