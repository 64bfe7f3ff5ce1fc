"""The proxy's pure parts, without sockets or clocks."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from surge.gateway.proxy.admission import Admission, Waiter
from surge.gateway.proxy.balancing import LeastOutstanding, RoundRobin, Target, routable
from surge.gateway.proxy.deadlines import DeadlineSweep
from surge.gateway.proxy.errors import (
    NoCapacity,
    UpstreamBroken,
    UpstreamConnectError,
    UpstreamTimeout,
)
from surge.gateway.proxy.feed import parse_targets
from surge.gateway.proxy.headers import request_head
from surge.gateway.proxy.health import HealthChange, SuccessCodes, TargetHealth
from surge.gateway.proxy.retry import Retry, after_failure, may_retry
from surge.gateway.proxy.upstream import BodyBuffering, UpstreamConnection, UpstreamResponse
from surge.gateway.spool import TempFiles

from .fakes import run_async


def target(port: int, limit: int = 2) -> Target:
    return Target.parse(f"127.0.0.1:{port}", limit, TargetHealth(5, 2))


# --- headers ------------------------------------------------------------------------------
def _head(headers: list[tuple[bytes, bytes]], body_length: int | None = 0, client: str = "h",
          scheme: str = "http", port: int = 80) -> list[bytes]:
    return request_head("GET", "/a?b=1", headers, client_host=client, scheme=scheme,
                        server_port=port, body_length=body_length).split(b"\r\n")


def test_request_head_adds_forwarding_and_drops_hop_by_hop():
    incoming = [
        (b"host", b"app.example"), (b"x-forwarded-for", b"1.1.1.1"),
        (b"x-forwarded-for", b"2.2.2.2"), (b"connection", b"keep-alive, X-Secret"),
        (b"x-secret", b"s"), (b"keep-alive", b"timeout=5"), (b"te", b"trailers"),
        (b"upgrade", b"h2c"), (b"proxy-authorization", b"Basic x"), (b"trailer", b"x"),
        (b"x-real-ip", b"6.6.6.6"), (b"x-forwarded-proto", b"gopher"), (b"accept", b"*/*"),
        (b"content-length", b"99"), (b"expect", b"100-continue"), (b"proxy-foo", b"1"),
    ]
    assert _head(incoming, 5, "10.0.0.9", "https", 443) == [
        b"GET /a?b=1 HTTP/1.1", b"host: app.example", b"accept: */*",
        b"x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.9", b"x-forwarded-proto: https",
        b"x-forwarded-port: 443", b"x-real-ip: 10.0.0.9", b"content-length: 5", b"", b"",
    ]
    # the same client again (the forwarding lines are remembered), with no X-Forwarded-For
    assert _head([(b"host", b"x"), (b"connection", b"close")], 0, "10.0.0.9", "https", 443) == [
        b"GET /a?b=1 HTTP/1.1", b"host: x", b"x-forwarded-for: 10.0.0.9",
        b"x-forwarded-proto: https", b"x-forwarded-port: 443", b"x-real-ip: 10.0.0.9", b"", b"",
    ]


def test_request_head_drops_forwarding_headers_spelt_with_underscores():
    # Starman would give the app HTTP_X_REAL_IP = "6.6.6.6, <client>": the client's first.
    incoming = [(b"host", b"x"), (b"x_real_ip", b"6.6.6.6"), (b"x-forwarded_proto", b"https"),
                (b"x_forwarded_for", b"6.6.6.6"), (b"x_forwarded_port", b"1"),
                (b"x_other", b"kept")]
    assert _head(incoming, 0, "10.0.0.9") == [
        b"GET /a?b=1 HTTP/1.1", b"host: x", b"x_other: kept", b"x-forwarded-for: 10.0.0.9",
        b"x-forwarded-proto: http", b"x-forwarded-port: 80", b"x-real-ip: 10.0.0.9", b"", b"",
    ]


def test_request_head_frames_the_body():
    assert b"transfer-encoding: chunked" in _head([], body_length=None)
    assert not any(line.startswith((b"content-length", b"transfer-encoding"))
                   for line in _head([], body_length=0))
    assert b"content-length: 0" in _head([(b"content-length", b"0")], body_length=0)


@run_async
async def test_response_headers_drop_hop_by_hop_date_and_server_and_keep_length():
    connection, _ = _connection()
    response = connection.begin(skip_body=False)
    connection.data_received(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n"
        b"Keep-Alive: timeout=5\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nServer: app\r\n"
        b"Proxy-Thing: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nabc")
    assert response.headers == [(b"content-length", b"3"), (b"set-cookie", b"a=1"),
                                (b"set-cookie", b"b=2")]
    assert response.complete and not response.keep_alive


# --- read timeouts of the task-free path ---------------------------------------------------
@run_async
async def test_deadline_sweep_expires_the_overdue_and_nothing_forgotten():
    now = [0.0]
    sweep = DeadlineSweep(1.0, lambda: now[0])
    expired: list[str] = []

    class Request:
        def __init__(self, name: str) -> None:
            self.name = name

        def expired(self) -> None:
            expired.append(self.name)

    early, late, answered = Request("early"), Request("late"), Request("answered")
    sweep.watch(early, 0.0)
    sweep.watch(late, 0.5)
    sweep.watch(answered, 0.0)
    sweep.forget(answered)
    now[0] = 1.2
    await asyncio.sleep(sweep.interval * 1.5)
    assert expired == ["early"] and len(sweep) == 1
    now[0] = 1.6
    await asyncio.sleep(sweep.interval * 1.5)
    assert expired == ["early", "late"] and len(sweep) == 0


# --- health ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "inside", "outside"), [
    ("200", [200], [201, 500]), ("200,204", [200, 204], [201]),
    ("200-299", [200, 250, 299], [199, 300]), ("200-204,301", [203, 301], [205, 302]),
])
def test_success_codes(spec, inside, outside):
    codes = SuccessCodes(spec)
    assert all(s in codes for s in inside)
    assert not any(s in codes for s in outside)


@pytest.mark.parametrize("bad", ["", "abc", "200-", "2xx"])
def test_success_codes_reject_nonsense(bad):
    with pytest.raises(ValueError, match="success codes"):
        SuccessCodes(bad)


def test_health_moves_only_after_thresholds_in_a_row():
    health = TargetHealth(healthy_threshold=3, unhealthy_threshold=2)
    assert health.healthy  # a registered target starts healthy
    assert health.record_check(False) is None
    assert health.record_check(True) is None  # the failure streak is broken
    assert health.record_check(False) is None
    assert health.record_check(False) is HealthChange.BECAME_UNHEALTHY
    assert not health.healthy
    assert health.record_check(True) is None
    assert health.record_check(True) is None
    assert health.record_check(False) is None  # streak broken: start again
    assert [health.record_check(True) for _ in range(3)] == [
        None, None, HealthChange.BECAME_HEALTHY]
    assert health.healthy


def test_passive_ejection_lasts_its_time_and_a_passed_check_ends_it():
    health = TargetHealth(5, 2)
    health.record_connect_failure(now=100.0, ejection_time=10.0)
    assert not health.available(105.0)
    assert health.available(110.0)
    health.record_connect_failure(now=200.0, ejection_time=10.0)
    health.record_check(True)
    assert health.available(201.0)


# --- balancing ------------------------------------------------------------------------------
def test_round_robin_takes_turns_and_skips_full_targets():
    a, b, c = target(1), target(2), target(3)
    rr = RoundRobin()
    assert [rr.choose([a, b, c], ()) for _ in range(4)] == [a, b, c, a]
    b.in_flight = b.limit
    assert [rr.choose([a, b, c], ()) for _ in range(3)] == [c, a, c]
    assert rr.choose([a, b, c], (a, c)) is None


def test_least_outstanding_prefers_the_idlest_and_rotates_ties():
    a, b, c = target(1, limit=5), target(2, limit=5), target(3, limit=5)
    lo = LeastOutstanding()
    a.in_flight, b.in_flight, c.in_flight = 3, 1, 2
    assert lo.choose([a, b, c], ()) is b
    a.in_flight = b.in_flight = c.in_flight = 0
    assert {id(lo.choose([a, b, c], ())) for _ in range(3)} == {id(a), id(b), id(c)}
    b.in_flight = 5
    assert lo.choose([b], ()) is None


def test_routable_skips_unhealthy_and_draining_and_fails_open():
    a, b, c = target(1), target(2), target(3)
    c.draining = True
    b.health.healthy = False
    assert routable([a, b, c], 0.0) == [a]
    a.health.record_connect_failure(0.0, 10.0)
    # every live target is out: route to all of them anyway (never to a draining one)
    assert routable([a, b, c], 1.0) == [a, b]


# --- admission ------------------------------------------------------------------------------
def test_slots_are_never_exceeded_and_waiters_are_served_in_order():
    a = target(1, limit=2)
    admission = Admission(RoundRobin(), max_waiting=2)
    admission.targets.append(a)
    assert admission.try_acquire(0.0) is a
    assert admission.try_acquire(0.0) is a
    assert admission.try_acquire(0.0) is None
    assert a.in_flight == 2
    first, second, third = Waiter(), Waiter(), Waiter()
    assert admission.enqueue(first) and admission.enqueue(second)
    assert not admission.enqueue(third)  # the queue is full: 503
    assert admission.release(a, 0.0) == [first]
    assert first.granted is a and a.in_flight == 2
    assert admission.try_acquire(0.0) is None  # a newcomer never overtakes a waiter
    admission.cancel(second)
    assert admission.release(a, 0.0) == []
    assert a.in_flight == 1


def test_expired_waiters_leave_the_line_oldest_first_and_checks_never_expire():
    a = target(1, limit=1)
    admission = Admission(RoundRobin(), max_waiting=10)
    admission.targets.append(a)
    admission.try_acquire(0.0)
    early, late = Waiter(deadline=5.0), Waiter(deadline=7.0)
    check = Waiter(only=a)
    admission.enqueue(early)
    admission.enqueue(late)
    admission.enqueue_first(check)
    assert admission.expire(4.9) == []
    assert admission.expire(5.0) == [early]
    assert list(admission.waiting) == [check, late]
    assert admission.expire(100.0) == [late]
    assert list(admission.waiting) == [check]


def test_a_retrying_waiter_does_not_block_the_line():
    a, b = target(1, limit=1), target(2, limit=1)
    admission = Admission(RoundRobin(), max_waiting=10)
    admission.targets.extend([a, b])
    admission.try_acquire(0.0)
    admission.try_acquire(0.0)
    retrying, fresh = Waiter(excluded=(a,)), Waiter()
    admission.enqueue(retrying)
    admission.enqueue(fresh)
    assert admission.release(a, 0.0) == [fresh]  # a freed, but the retry must avoid it
    assert admission.release(b, 0.0) == [retrying]
    assert retrying.granted is b


def test_a_health_check_goes_ahead_of_the_line_on_its_own_target():
    a, b = target(1, limit=1), target(2, limit=1)
    b.health.healthy = False  # not routable, but still checked
    admission = Admission(RoundRobin(), max_waiting=10)
    admission.targets.extend([a, b])
    assert admission.try_acquire(0.0) is a
    assert admission.try_acquire_on(b)
    assert not admission.try_acquire_on(b)
    request, check = Waiter(), Waiter(only=a)
    admission.enqueue(request)
    admission.enqueue_first(check)
    assert admission.release(b, 0.0) == []  # b is free, but neither waiter may take it
    assert admission.release(a, 0.0) == [check]
    assert check.granted is a and a.requests == 1  # checks are not counted as requests
    assert admission.release(a, 0.0) == [request]


def test_capacity_appearing_is_pumped_to_waiters():
    a = target(1, limit=1)
    admission = Admission(LeastOutstanding(), max_waiting=10)
    admission.targets.append(a)
    admission.try_acquire(0.0)
    waiter = Waiter()
    admission.enqueue(waiter)
    b = target(2, limit=1)
    admission.targets.append(b)
    assert admission.pump(0.0) == [waiter] and waiter.granted is b


# --- retry ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "started", "replayable", "attempts", "others", "expected"), [
    ("GET", False, True, 1, 1, True),
    ("PUT", False, True, 1, 1, True),
    ("POST", False, True, 1, 1, False),
    ("PATCH", False, True, 1, 1, False),
    ("GET", True, True, 1, 1, False),
    ("PUT", False, False, 1, 1, False),
    ("GET", False, True, 3, 1, False),
    ("GET", False, True, 1, 0, False),
])
def test_retry_decision(method, started, replayable, attempts, others, expected):
    assert may_retry(method, response_started=started, body_replayable=replayable,
                     attempts=attempts, other_targets=others) is expected


def _after(failure: Exception, method: str = "GET", *, started: bool = False,
           replayable: bool = True, attempts: int = 1, others: int = 1,
           on_new_connection: bool = False) -> Retry:
    return after_failure(failure, method, response_started=started,  # type: ignore[arg-type]
                         body_replayable=replayable, attempts=attempts, other_targets=others,
                         on_new_connection=on_new_connection)


def test_what_follows_a_failed_attempt():
    closed_on_reuse = UpstreamBroken("closed", nothing_received=True, reused=True)
    closed_fresh = UpstreamBroken("closed", nothing_received=True)
    cut = UpstreamBroken("cut mid-response")
    refused = UpstreamConnectError("refused")
    # A kept-alive connection the target closed as we reused it: once more, on a new one,
    # even with no other target, but only once.
    assert _after(closed_on_reuse, others=0) is Retry.ON_A_NEW_CONNECTION
    assert _after(closed_on_reuse, on_new_connection=True) is Retry.ELSEWHERE
    assert _after(closed_on_reuse, on_new_connection=True, others=0) is Retry.NO
    assert _after(closed_on_reuse, "POST") is Retry.NO
    assert _after(closed_on_reuse, replayable=False) is Retry.NO
    # Nothing sent back: elsewhere, within may_retry's rules.
    assert _after(closed_fresh) is Retry.ELSEWHERE
    assert _after(refused, "PUT") is Retry.ELSEWHERE
    assert _after(refused, attempts=3) is Retry.NO
    assert _after(refused, started=True) is Retry.NO
    # The target received it and may have acted on it, or took too long: never again.
    assert _after(cut) is Retry.NO
    assert _after(UpstreamTimeout("slow")) is Retry.NO
    assert _after(NoCapacity("full")) is Retry.NO


# --- targets feed ---------------------------------------------------------------------------
def test_parse_targets():
    version, pools = parse_targets(
        b'{"version": 7, "pools": {"web": [{"address": "127.0.0.1:5001", "state": "active"},'
        b' {"address": "127.0.0.1:5002", "state": "draining"}]}}')
    assert version == 7
    assert pools == {"web": [("127.0.0.1:5001", "active"), ("127.0.0.1:5002", "draining")]}
    with pytest.raises(ValueError):
        parse_targets(b'{"version": "x", "pools": {}}')


# --- response parsing (fed bytes, no socket) ----------------------------------------------
class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.paused = False
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _connection() -> tuple[UpstreamConnection, _Transport]:
    connection, transport = UpstreamConnection(), _Transport()
    connection.connection_made(transport)
    return connection, transport


async def _body(response: UpstreamResponse) -> bytes:
    pieces = []
    while piece := await response.read_body(1.0):
        pieces.append(piece)
    return b"".join(pieces)


@run_async
async def test_chunked_response_split_anywhere_is_reassembled():
    connection, _ = _connection()
    response = connection.begin(skip_body=False)
    raw = (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
           b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    for i in range(0, len(raw), 7):
        connection.data_received(raw[i:i + 7])
    await response.read_head(1.0)
    assert response.status == 201
    assert (b"x-a", b"1") in response.headers
    assert await _body(response) == b"hello world"
    assert response.reusable


@run_async
async def test_head_response_and_informational_and_close_delimited():
    connection, _ = _connection()
    response = connection.begin(skip_body=True)
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    await response.read_head(1.0)
    assert await _body(response) == b""
    # A body may still follow (Starman sends what the app returns, HEAD or not): the
    # connection carries nothing more, and such bytes close it.
    assert response.complete and not response.reusable
    connection.data_received(b"x" * 1000)
    assert connection.closed
    connection, _ = _connection()
    response = connection.begin(skip_body=False)
    connection.data_received(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                             b"Content-Length: 2\r\n\r\nok")
    await response.read_head(1.0)
    assert response.status == 200 and await _body(response) == b"ok"
    assert response.reusable
    response = connection.begin(skip_body=False)
    connection.data_received(b"HTTP/1.1 200 OK\r\n\r\nuntil")
    await response.read_head(1.0)
    connection.data_received(b" close")
    connection.connection_lost(None)
    assert await _body(response) == b"until close"
    assert not response.reusable  # never reused


@run_async
async def test_a_finished_response_frees_its_connection_at_once():
    connection, _ = _connection()
    response = connection.begin(skip_body=False)
    freed: list[UpstreamResponse] = []
    response.on_complete = freed.append
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    assert freed == []
    connection.data_received(b"cde")
    assert freed == [response]
    following = connection.begin(skip_body=False)  # the next request rides it meanwhile
    connection.data_received(b"HTTP/1.1 204 No Content\r\n\r\n")
    await response.read_head(1.0)
    assert await _body(response) == b"abcde"  # the first response is still whole
    await following.read_head(1.0)
    assert following.status == 204


@run_async
async def test_large_body_pauses_reading_until_consumed():
    connection, transport = _connection()
    response = connection.begin(skip_body=False)
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
    connection.data_received(b"z" * 300_000)
    assert transport.paused
    assert len(await response.read_body(1.0)) == 300_000
    assert not transport.paused


@run_async
async def test_a_silent_target_times_out_and_a_garbled_one_is_broken():
    from surge.gateway.proxy.errors import UpstreamBroken, UpstreamTimeout

    connection, _ = _connection()
    response = connection.begin(skip_body=False)
    with pytest.raises(UpstreamTimeout):
        await response.read_head(0.05)
    connection, transport = _connection()
    response = connection.begin(skip_body=False)
    connection.data_received(b"NOT HTTP\r\n\r\n")
    with pytest.raises(UpstreamBroken):
        await response.read_head(1.0)
    assert transport.closed


def _buffered(tmp_path: Path, memory: int, temp_file: int
              ) -> tuple[UpstreamConnection, _Transport, UpstreamResponse]:
    connection, transport = _connection()
    response = connection.begin(False, BodyBuffering(
        memory, temp_file, TempFiles(str(tmp_path), keep_idle=0) if temp_file else None))
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    return connection, transport, response


def _open_files(tmp_path: Path) -> int:
    return sum(1 for fd in os.listdir("/proc/self/fd")
               if os.path.realpath(f"/proc/self/fd/{fd}").startswith(str(tmp_path)))


@run_async
async def test_a_buffered_body_spills_to_a_temp_file_in_order(tmp_path: Path):
    connection, transport, response = _buffered(tmp_path, memory=10, temp_file=1000)
    connection.data_received(b"a" * 8)  # memory
    assert _open_files(tmp_path) == 0
    connection.data_received(b"b" * 8)  # past the memory: the file
    connection.data_received(b"c" * 4)  # the file holds some: after it, not in memory
    assert _open_files(tmp_path) == 1 and not os.listdir(tmp_path)  # unnamed
    assert response.body_buffered == 20 and not transport.paused
    await response.read_head(1.0)
    assert await response.read_body(1.0) == b"a" * 8
    assert await response.read_body(1.0) == b"b" * 8 + b"c" * 4  # the file, emptied
    connection.data_received(b"d" * 6)  # memory again
    connection.data_received(b"e" * 6)  # over the memory limit: the file again
    assert response.take_body() == b"d" * 6 + b"e" * 6
    assert _open_files(tmp_path) == 0  # take_body gives the file back


@run_async
async def test_a_full_temp_file_pauses_the_target_until_it_is_emptied(tmp_path: Path):
    connection, transport, response = _buffered(tmp_path, memory=10, temp_file=100)
    connection.data_received(b"m" * 10)
    connection.data_received(b"f" * 60)
    assert not transport.paused
    connection.data_received(b"g" * 60)  # the file is at its limit: the target waits
    assert transport.paused and response.body_buffered == 130
    await response.read_head(1.0)
    assert await response.read_body(1.0) == b"m" * 10
    assert transport.paused  # the file still holds 120 bytes
    assert await response.read_body(1.0) == b"f" * 60 + b"g" * 60
    assert not transport.paused  # emptied: the target sends again
    response.close_file()
    assert _open_files(tmp_path) == 0


@run_async
async def test_without_a_temp_file_the_memory_limit_pauses_the_target(tmp_path: Path):
    connection, transport, response = _buffered(tmp_path, memory=10, temp_file=0)
    connection.data_received(b"x" * 10)
    assert not transport.paused
    connection.data_received(b"y")
    assert transport.paused and _open_files(tmp_path) == 0
    await response.read_head(1.0)
    assert await response.read_body(1.0) == b"x" * 10 + b"y"
    assert not transport.paused


@run_async
async def test_a_complete_response_frees_the_target_even_when_the_connection_cannot_stay():
    connection, _ = _connection()
    response = connection.begin(skip_body=False)
    freed: list[UpstreamResponse] = []
    response.on_complete = freed.append
    connection.data_received(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n"
                             b"\r\nok")
    assert freed == [response] and not response.reusable
    connection, _ = _connection()
    delimited = connection.begin(skip_body=False)
    delimited.on_complete = freed.append
    connection.data_received(b"HTTP/1.1 200 OK\r\n\r\nuntil close")
    assert freed == [response]
    connection.connection_lost(None)  # the end of a close-delimited body
    assert freed == [response, delimited]
