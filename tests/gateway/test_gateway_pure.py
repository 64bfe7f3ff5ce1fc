"""The gateway's pure parts, without sockets: framing, states, router, static paths,
conditional requests, envelopes, the process plan, the response and body streams."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httptools
import pytest

from surge.gateway.errors import BadRequest, BodyTooLarge, InvalidPayload
from surge.gateway.http.body import StreamingBody
from surge.gateway.http.limits import BODY_HIGH_WATER, Limits
from surge.gateway.http.state import (
    Event,
    Expiry,
    IllegalTransition,
    ReadState,
    expiry_for,
    next_state,
)
from surge.gateway.http.writer import ResponseStream
from surge.gateway.process import plan_processes
from surge.gateway.routes.enqueue import parse_payload
from surge.gateway.routes.router import MethodNotAllowedHandler, NotFoundHandler, RouteEntry, Router
from surge.gateway.routes.static import (
    FileValidators,
    is_not_modified,
    resolve_static_path,
)
from surge.httpkit.framing import decide_framing, header_problem, parser_refuses_bad_headers

HOST = (b"host", b"x")


# framing


def test_plain_content_length() -> None:
    framing = decide_framing("1.1", [HOST, (b"content-length", b"12")], 100)
    assert framing.content_length == 12 and not framing.chunked and framing.has_body


def test_chunked() -> None:
    framing = decide_framing("1.1", [HOST, (b"transfer-encoding", b"chunked")], 100)
    assert framing.chunked and framing.content_length is None


@pytest.mark.parametrize("headers", [
    [HOST, (b"content-length", b"3"), (b"transfer-encoding", b"chunked")],
    [HOST, (b"content-length", b"3"), (b"content-length", b"3")],
    [HOST, (b"content-length", b"-1")],
    [HOST, (b"content-length", b"1,1")],
    [HOST, (b"content-length", b"0x10")],
    [HOST, (b"transfer-encoding", b"gzip, chunked")],
    [HOST, (b"transfer-encoding", b"chunked"), (b"transfer-encoding", b"chunked")],
    [],  # HTTP/1.1 without Host
    [HOST, HOST],
])
def test_ambiguous_framing_is_refused(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(BadRequest):
        decide_framing("1.1", headers, 100)


def test_transfer_encoding_on_http10_is_refused() -> None:
    with pytest.raises(BadRequest):
        decide_framing("1.0", [(b"transfer-encoding", b"chunked")], 100)


def test_declared_length_over_the_limit_is_413() -> None:
    with pytest.raises(BodyTooLarge):
        decide_framing("1.1", [HOST, (b"content-length", b"101")], 100)


def test_expect_continue() -> None:
    assert decide_framing("1.1", [HOST, (b"expect", b"100-Continue")], 10).expect_continue


@pytest.mark.parametrize("name", [b"x y", b"x:y", b"", b"caf\xc3\xa9", b"a\tb"])
def test_bad_header_names(name: bytes) -> None:
    assert isinstance(header_problem(name, b"v"), BadRequest)


def test_good_header_name_and_folded_value() -> None:
    assert header_problem(b"X-Forwarded-For", b"10.0.0.1") is None
    assert isinstance(header_problem(b"x", b"a\r\n b"), BadRequest)
    assert isinstance(header_problem(b"x\n", b"v"), BadRequest)


class _Events:
    def __init__(self) -> None:
        self.seen: list[object] = []

    def on_url(self, url: bytes) -> None:
        self.seen.append(url)

    def on_body(self, body: bytes) -> None:
        self.seen.append(("body", body))

    def on_message_complete(self) -> None:
        self.seen.append("complete")


@pytest.mark.parametrize("framing", [b"Content-Length: 5\r\n\r\nhello",
                                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"])
def test_llhttp_skips_the_body_of_a_request_asking_for_an_upgrade(framing: bytes) -> None:
    # What HttpConnection._feed_after_upgrade and _AfterUpgrade rely on: the message ends
    # at its head, llhttp says where, and is ready for the next request at once.
    head = b"PUT /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
    events = _Events()
    parser = httptools.HttpRequestParser(events)
    with pytest.raises(httptools.HttpParserUpgrade) as stop:
        parser.feed_data(head + framing)
    assert events.seen == [b"/a", "complete"]
    assert (head + framing)[stop.value.args[0]:] == framing.split(b"\r\n\r\n", 1)[1]
    parser.feed_data(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert events.seen[2:] == [b"/next", "complete"]


def test_the_installed_parser_refuses_bad_header_lines_itself() -> None:
    # So the gateway skips header_problem per header; a lenient build would turn it back on.
    assert parser_refuses_bad_headers()


# connection states


def test_state_cycle_and_illegal_moves() -> None:
    state = ReadState.IDLE
    for event, expected in [(Event.MESSAGE_BEGIN, ReadState.HEAD),
                            (Event.HEADERS_COMPLETE, ReadState.BODY),
                            (Event.MESSAGE_COMPLETE, ReadState.IDLE),
                            (Event.STOP, ReadState.DONE)]:
        state = next_state(state, event)
        assert state is expected
    with pytest.raises(IllegalTransition):
        next_state(ReadState.IDLE, Event.HEADERS_COMPLETE)
    with pytest.raises(IllegalTransition):
        next_state(ReadState.DONE, Event.MESSAGE_BEGIN)


def test_which_deadline_applies() -> None:
    assert expiry_for(ReadState.HEAD, True, False) is Expiry.REQUEST_TIMEOUT
    assert expiry_for(ReadState.BODY, True, False) is Expiry.REQUEST_TIMEOUT
    assert expiry_for(ReadState.BODY, True, True) is Expiry.NONE  # our backpressure
    assert expiry_for(ReadState.IDLE, False, False) is Expiry.CLOSE_IDLE
    assert expiry_for(ReadState.IDLE, True, False) is Expiry.NONE  # waiting on a handler


def test_sweep_interval_follows_shortest_timeout() -> None:
    assert Limits(header_timeout=0.4).sweep_interval == pytest.approx(0.1)
    assert Limits().sweep_interval == 1.0
    assert Limits(header_timeout=0.01).sweep_interval == 0.05


# router


class Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    async def handle(self, request: object, response: object) -> None:
        raise AssertionError("not called")


def test_router_first_match_by_method_and_prefix() -> None:
    images, static, rest = Marker("images"), Marker("static"), Marker("rest")
    router = Router([
        RouteEntry("/images", frozenset({"POST"}), images),
        RouteEntry("/static/", frozenset(), static),
        RouteEntry("/", frozenset(), rest),
    ])
    assert router.match("POST", "/images") is images
    assert router.match("POST", "/images/1") is images
    assert router.match("POST", "/imagesx") is rest  # prefixes match whole segments
    assert router.match("GET", "/images") is rest  # method mismatch: next route
    assert router.match("GET", "/static/a.css") is static
    assert router.match("GET", "/anything") is rest


def test_router_404_and_405() -> None:
    router = Router([RouteEntry("/jobs", frozenset({"POST"}), Marker("jobs"))])
    assert isinstance(router.match("GET", "/other"), NotFoundHandler)
    not_allowed = router.match("GET", "/jobs/1")
    assert isinstance(not_allowed, MethodNotAllowedHandler) and not_allowed.allow == b"POST"


def test_trace_only_where_a_route_names_it() -> None:
    echo, rest = Marker("echo"), Marker("rest")
    router = Router([RouteEntry("/echo", frozenset({"TRACE"}), echo),
                     RouteEntry("/", frozenset(), rest)])
    assert router.match("TRACE", "/echo") is echo
    assert router.match("PROPFIND", "/x") is rest  # any other method still passes
    refused = router.match("TRACE", "/x")  # "any method" is not TRACE (cross-site tracing)
    assert isinstance(refused, MethodNotAllowedHandler)
    assert refused.allow == b"DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"


def test_exact_route_and_head_follows_get() -> None:
    health = Marker("health")
    router = Router([RouteEntry("/health", frozenset({"GET"}), health, exact=True)])
    assert router.match("HEAD", "/health") is health
    assert isinstance(router.match("GET", "/health/x"), NotFoundHandler)


# static paths


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "index.html").write_text("<p>")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "leak.txt")
    os.symlink(root / "a.txt", root / "inside-link.txt")
    return root


def test_static_resolution(site: Path) -> None:
    root = str(site.resolve())
    assert resolve_static_path(root, "/a.txt", "index.html") == f"{root}/a.txt"
    assert resolve_static_path(root, "/sub/", "index.html") == f"{root}/sub/index.html"
    assert resolve_static_path(root, "/sub", None) is None
    assert resolve_static_path(root, "/inside-link.txt", None) == f"{root}/a.txt"
    assert resolve_static_path(root, "/missing", None) is None


@pytest.mark.parametrize("relative", ["/../secret.txt", "/sub/../../secret.txt",
                                      "/leak.txt", "/..", "/a.txt\x00", "/..\\secret.txt"])
def test_static_traversal_is_not_found(site: Path, relative: str) -> None:
    assert resolve_static_path(str(site.resolve()), relative, "index.html") is None


def test_conditional_requests(site: Path) -> None:
    validators = FileValidators.of(os.stat(site / "a.txt"))
    assert is_not_modified([(b"if-none-match", validators.etag)], validators)
    assert is_not_modified([(b"if-none-match", b'"x", W/' + validators.etag)], validators)
    assert not is_not_modified([(b"if-none-match", b'"other"')], validators)
    # If-None-Match wins over If-Modified-Since.
    assert not is_not_modified([(b"if-none-match", b'"other"'),
                                (b"if-modified-since", validators.last_modified)], validators)
    assert is_not_modified([(b"if-modified-since", validators.last_modified)], validators)
    assert not is_not_modified([(b"if-modified-since", b"Thu, 01 Jan 1970 00:00:00 GMT")],
                               validators)
    assert not is_not_modified([(b"if-modified-since", b"garbage")], validators)


# enqueue payload (the envelope: tests/unit/test_envelope.py)


def test_payload() -> None:
    assert parse_payload(b' [1, "x"] ') == [1, "x"]


@pytest.mark.parametrize("body, fragment", [
    (b"", "empty"), (b'{"a": ', "line 1 column"), (b"{'a': 1}", "not valid JSON")])
def test_invalid_payload_is_precise(body: bytes, fragment: str) -> None:
    with pytest.raises(InvalidPayload, match=fragment):
        parse_payload(body)


# process plan


def test_auto_processes_hold_max_connections() -> None:
    plan = plan_processes("auto", 60000, 2, 20000)
    assert plan.processes == 4 and plan.connections_per_process == 16000
    assert plan_processes("auto", 1000, 2, 20000).processes == 2  # at least one per core
    assert plan_processes(3, 60000, 2, 20000).processes == 3


# response and body streams with in-memory fakes


class FakeFlow:
    def __init__(self) -> None:
        self.sent = bytearray()
        self.date_header = b"date: today\r\n"
        self.continues = 0
        self.paused = 0
        self.resumed = 0

    def write(self, data: bytes) -> None:
        self.sent += data

    async def drain(self) -> None:
        return None

    async def sendfile(self, fd: int, offset: int, count: int) -> None:
        self.sent += os.pread(fd, count, offset)

    def pause_body(self) -> None:
        self.paused += 1

    def resume_body(self) -> None:
        self.resumed += 1

    def send_continue(self) -> None:
        self.continues += 1


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_response_without_length_is_chunked() -> None:
    flow = FakeFlow()
    stream = ResponseStream(flow, http11=True, head_only=False, keep_alive=True)

    async def respond() -> None:
        stream.start(200, [(b"x-a", b"1"), (b"Connection", b"keep-alive")])
        await stream.write(b"hello")
        await stream.end()

    run(respond())
    text = bytes(flow.sent)
    assert text.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked\r\n" in text and b"Connection" not in text
    assert text.endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


def test_head_response_has_no_body_and_http10_closes() -> None:
    flow = FakeFlow()
    stream = ResponseStream(flow, http11=False, head_only=True, keep_alive=True)

    async def respond() -> None:
        stream.start(200, [(b"content-length", b"5")])
        await stream.write(b"hello")
        await stream.end()

    run(respond())
    assert bytes(flow.sent).endswith(b"content-length: 5\r\nconnection: keep-alive\r\n\r\n")
    flow = FakeFlow()
    stream = ResponseStream(flow, http11=False, head_only=False, keep_alive=True)
    stream.start(200, [])
    run(stream.end())
    assert b"connection: close" in flow.sent and not stream.keep_alive


def test_body_backpressure_and_continue() -> None:
    flow = FakeFlow()
    body = StreamingBody(None, flow, expect_continue=True)

    async def consume() -> bytes:
        reader = asyncio.ensure_future(body.read_all(10 * BODY_HIGH_WATER))
        await asyncio.sleep(0)
        assert flow.continues == 1  # asked for the body once it was read
        for _ in range(5):
            body.feed(b"x" * (BODY_HIGH_WATER // 2))
        assert flow.paused == 1
        body.finish()
        return await reader

    data = run(consume())
    assert isinstance(data, bytes) and len(data) == 5 * (BODY_HIGH_WATER // 2)
    assert flow.resumed == 1


def test_a_body_already_complete_is_read_at_once_and_resumes_the_flow() -> None:
    flow = FakeFlow()
    body = StreamingBody(None, flow)
    pieces = [b"a" * BODY_HIGH_WATER, b"b" * BODY_HIGH_WATER, b"c"]
    for piece in pieces:
        body.feed(piece)
    body.finish()
    assert flow.paused == 1
    assert run(body.read_all(10 * BODY_HIGH_WATER)) == b"".join(pieces)
    assert flow.resumed == 1 and body.touched
    assert run(body.read_all(10)) == b""  # nothing left


def test_a_body_ended_short_of_its_length_is_never_complete() -> None:
    body = StreamingBody(11, None)
    body.feed(b"hello")
    body.finish()  # what an early message end (llhttp's, for an Upgrade) would do
    assert not body.complete
    with pytest.raises(BadRequest, match="5 of 11"):
        asyncio.run(body.read_all(100))


def test_body_over_limit() -> None:
    body = StreamingBody(None, None)
    body.feed(b"x" * 11)
    body.finish()
    with pytest.raises(BodyTooLarge):
        run(body.read_all(10))
    with pytest.raises(BodyTooLarge):
        run(StreamingBody(100, None).read_all(10))
