"""The proxy route against real upstreams on free ports, through in-memory exchanges."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from surge.config.settings import ProxyRoute, Settings
from surge.gateway.exchange import Request
from surge.gateway.proxy import ProxyService
from surge.gateway.proxy.errors import UpstreamBroken
from surge.gateway.proxy.forward import ProxyHandler

from .fakes import FakeBody, FakeResponse, make_request, run_async
from .upstreams import AdminFake, PythonUpstream, free_port

# Where the proxies the tests start keep their temporary files (set per test).
DATA_DIR = {"path": ""}


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path) -> None:
    DATA_DIR["path"] = str(tmp_path / "data")


def settings_for(targets: list[str], gateway: dict[str, Any] | None = None,
                 **pool: Any) -> Settings:
    pool.setdefault("health_check", {"path": "/health"})
    if not targets:  # a pool whose instances the supervisor starts (and announces)
        pool.setdefault("command", "app --port {port}")
    return Settings.model_validate({"data_dir": DATA_DIR["path"] or ".surge",
                                    "gateway": gateway or {},
                                    "pools": {"web": {"targets": targets, **pool}}})


@contextlib.asynccontextmanager
async def proxy(targets: list[str], targets_from: str | None = None,
                gateway: dict[str, Any] | None = None, **pool: Any) -> AsyncIterator[ProxyService]:
    service = ProxyService(settings_for(targets, gateway, **pool), targets_from, processes=1)
    await service.start()
    try:
        yield service
    finally:
        await service.stop(1.0)


@contextlib.asynccontextmanager
async def upstreams(count: int = 1) -> AsyncIterator[list[PythonUpstream]]:
    servers = [await PythonUpstream().start() for _ in range(count)]
    try:
        yield servers
    finally:
        for server in servers:
            await server.stop()


# Every test runs twice: through ``handle`` (a task per request) and through
# ``start_now`` (the callbacks the gateway's connections use for bodiless requests, which
# hand over to the coroutine path for anything unusual).
PATHS = {"eager": True}


@pytest.fixture(params=["task", "eager"], autouse=True)
def request_path(request: pytest.FixtureRequest) -> None:
    PATHS["eager"] = request.param == "eager"


async def answer(service: ProxyService, request: Request, response: FakeResponse) -> None:
    handler = service.handler_for("web")
    assert isinstance(handler, ProxyHandler)
    if PATHS["eager"]:
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done(exc: BaseException | None) -> None:
            assert not finished.done(), "done() called twice"
            if exc is None:
                finished.set_result(None)
            else:
                finished.set_exception(exc)

        if handler.start_now(request, response, done):
            assert not finished.done(), "done() called before start_now returned"
            await finished
            return
    await handler.handle(request, response)


async def get(service: ProxyService, target: str = "/echo", method: str = "GET",
              **request: Any) -> FakeResponse:
    response = FakeResponse()
    await answer(service, make_request(method, target, **request), response)
    return response


def web(service: ProxyService) -> dict[str, Any]:
    stats = service.stats()["web"]
    assert isinstance(stats, dict)
    return stats


@run_async
async def test_forwarding_headers_and_hop_by_hop():
    async with upstreams() as [app], proxy([app.address]) as service:
        response = await get(service, "/echo?q=1", headers=[
            (b"host", b"shop.example"), (b"x-forwarded-for", b"203.0.113.7"),
            (b"connection", b"x-private"), (b"x-private", b"1"), (b"te", b"trailers"),
            (b"keep-alive", b"300"), (b"proxy-authorization", b"secret"), (b"user-agent", b"t"),
        ])
        assert response.status == 200 and response.ended
        seen = orjson.loads(response.body)
        headers = dict(seen["headers"])
        assert seen["target"] == "/echo?q=1"
        assert headers["host"] == "shop.example"
        assert headers["x-forwarded-for"] == "203.0.113.7, 10.1.2.3"
        assert headers["x-real-ip"] == "10.1.2.3"
        assert headers["x-forwarded-proto"] == "https"
        assert headers["x-forwarded-port"] == "8443"
        assert headers["user-agent"] == "t"
        for hop in ("x-private", "te", "keep-alive", "proxy-authorization", "connection"):
            assert hop not in headers
        names = {name for name, _ in response.headers}
        assert {b"keep-alive", b"connection", b"x-hop"}.isdisjoint(names)
        assert response.header(b"content-length") == str(len(response.body)).encode()
        assert response.log_fields["target"] == app.address
        assert response.log_fields["target_status"] == 200


@run_async
async def test_keep_alive_connections_are_reused_and_capped():
    async with upstreams() as [app], proxy([app.address], keepalive_per_target=2,
                                           workers=8) as service:
        await _until(lambda: app.connections == 1)  # the first health check is done
        await asyncio.sleep(0.05)
        responses = [await get(service) for _ in range(20)]
        assert len({orjson.loads(r.body)["connection"] for r in responses}) == 1
        assert web(service)["targets"][app.address]["connections_opened"] == 1
        await asyncio.gather(*(get(service, "/slow?delay=0.1") for _ in range(6)))
        stats = web(service)["targets"][app.address]
        assert stats["connections_opened"] == 6
        assert stats["connections_reused"] >= 20
        assert stats["idle_connections"] == 2  # the other four were closed


@run_async
async def test_per_target_limit_is_never_exceeded():
    async with upstreams(2) as apps, proxy([a.address for a in apps], workers=3) as service:
        responses = await asyncio.gather(*(get(service, "/slow?delay=0.05")
                                           for _ in range(40)))
        assert [r.status for r in responses] == [200] * 40
        assert [a.max_in_progress for a in apps] == [3, 3]
        assert web(service)["queued"] > 0


@run_async
async def test_full_wait_queue_and_queue_timeout_answer_503():
    async with upstreams() as [app], proxy([app.address], workers=1,
                                           max_queued_requests=2) as service:
        responses = await asyncio.gather(*(get(service, "/slow?delay=0.3") for _ in range(6)))
        statuses = sorted(r.status for r in responses)
        assert statuses == [200, 200, 200, 503, 503, 503]
        rejected = [r for r in responses if r.status == 503]
        assert all(r.header(b"retry-after") == b"1" for r in rejected)
        assert web(service)["rejected_queue_full"] == 3
    async with upstreams() as [app], proxy([app.address], workers=1,
                                           queue_timeout="100ms") as service:
        slow, waiting = await asyncio.gather(get(service, "/slow?delay=0.5"), get(service))
        assert (slow.status, waiting.status) == (200, 503)
        assert web(service)["rejected_queue_timeout"] == 1


@run_async
async def test_connect_refused_is_502_and_silence_is_504():
    dead = f"127.0.0.1:{free_port()}"
    async with proxy([dead]) as service:
        response = await get(service)
        assert response.status == 502
        assert web(service)["gateway_502"] == 1
        assert web(service)["targets"][dead]["connect_failures"] == 1
    async with upstreams() as [app], proxy([app.address], read_timeout="200ms") as service:
        response = await get(service, "/slow?delay=1")
        assert response.status == 504
        assert web(service)["gateway_504"] == 1
        assert web(service)["in_flight"] == 0


@run_async
async def test_get_is_retried_elsewhere_but_post_never():
    dead = f"127.0.0.1:{free_port()}"
    async with upstreams(2) as [good, resetting]:
        resetting.reset_everything = True
        async with proxy([dead, resetting.address, good.address],
                         balancing="round_robin") as service:
            for _ in range(6):
                response = await get(service)
                assert response.status == 200
                assert orjson.loads(response.body)["port"] == good.port
            assert web(service)["retries"] > 0
        async with proxy([resetting.address, good.address],
                         balancing="round_robin") as service:
            posts = [await get(service, method="POST", body=FakeBody([b"x"], 1))
                     for _ in range(4)]
            assert sorted(r.status for r in posts) == [200, 200, 502, 502]
            assert web(service)["retries"] == 0
            puts = [await get(service, method="PUT", body=FakeBody([b"x"], 1))
                    for _ in range(4)]
            assert [r.status for r in puts] == [200] * 4  # small body: buffered, replayable


@run_async
async def test_a_body_kept_in_a_temp_file_is_sent_whole_and_again_on_a_retry():
    block = bytes(range(256)) * 400  # 100 kB: past body_buffer_size, so in a temp file
    chunked = [(b"host", b"x"), (b"transfer-encoding", b"chunked")]
    async with upstreams(2) as [good, resetting]:
        resetting.reset_everything = True
        async with proxy([resetting.address, good.address], balancing="round_robin") as service:
            for _ in range(2):  # one of them meets the resetting target first
                response = await get(service, method="PUT", headers=chunked,
                                     body=FakeBody([block[:30_000], block[30_000:]], None))
                seen = orjson.loads(response.body)
                assert (response.status, seen["port"]) == (200, good.port)
                assert seen["body_size"] == len(block)
                assert seen["body_sha256"] == hashlib.sha256(block).hexdigest()
                headers = dict(seen["headers"])
                assert headers["content-length"] == str(len(block))  # no longer chunked
            assert web(service)["retries"] >= 1


@run_async
async def test_a_route_without_request_buffering_streams_the_body_as_it_comes():
    chunked = [(b"host", b"x"), (b"transfer-encoding", b"chunked")]
    async with upstreams() as [app], proxy([app.address]) as service:
        for request_buffering in (True, False):
            handler = service.handler_for(ProxyRoute(pool="web",
                                                     request_buffering=request_buffering))
            body = FakeBody([b"a" * 1000] * 5, None, delay=0.1)  # half a second of body
            response = FakeResponse()
            sending = asyncio.ensure_future(handler.handle(
                make_request("PUT", f"/echo?{request_buffering}", headers=chunked, body=body),
                response))
            await asyncio.sleep(0.25)  # part of the body has come
            put_seen = f"PUT /echo?{request_buffering}" in app.seen
            assert put_seen is not request_buffering  # streamed: the target has it already
            await sending
            headers = dict(orjson.loads(response.body)["headers"])
            assert ("transfer-encoding" in headers) is not request_buffering


class _StalledClient(FakeResponse):
    """A client that takes nothing until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__(keep_body=False)
        self.gate = asyncio.Event()

    async def write(self, data: bytes) -> None:
        await self.gate.wait()
        await super().write(data)


@run_async
async def test_a_stalled_client_holds_no_slot_unless_the_route_streams_responses():
    size = 16 * 1024 * 1024  # more than the kernel's socket buffers hold on the way
    async with upstreams() as [app], proxy([app.address], workers=1,
                                           queue_timeout="10s") as service:
        for response_buffering in (True, False):
            handler = service.handler_for(ProxyRoute(pool="web",
                                                     response_buffering=response_buffering))
            stalled = _StalledClient()
            download = asyncio.ensure_future(
                handler.handle(make_request("GET", f"/big?size={size}"), stalled))
            await _until(lambda stalled=stalled: stalled.started)
            quick = asyncio.ensure_future(get(service))
            await asyncio.sleep(0.5)
            # Buffered, the target was done with it at once; streamed, the one slot waits.
            assert quick.done() is response_buffering
            stalled.gate.set()
            assert (await quick).status == 200
            await download
            assert stalled.size == size


@run_async
async def test_a_closed_keep_alive_connection_is_tried_once_more_on_a_new_one():
    async with upstreams() as [app], proxy([app.address]) as service:
        assert (await get(service)).status == 200  # leaves a kept-alive connection
        app.drop_reused = True
        assert (await get(service)).status == 200  # reused, dropped, then a new connection
        assert web(service)["retries"] == 1
        assert (await get(service, method="POST")).status == 502  # never sent twice
        assert web(service)["retries"] == 1


@run_async
async def test_health_checks_move_targets_and_fail_open():
    async with upstreams(2) as [a, b], proxy(
        [a.address, b.address],
        health_check={"path": "/health", "interval": "30ms", "timeout": "1s",
                      "healthy_threshold": 3, "unhealthy_threshold": 2},
    ) as service:
        a.health_status = 500
        await _until(lambda: not web(service)["targets"][a.address]["healthy"])
        ports = {orjson.loads((await get(service)).body)["port"] for _ in range(6)}
        assert ports == {b.port}
        b.health_status = 503  # everyone is unhealthy: route to all (fail open)
        await _until(lambda: web(service)["healthy_targets"] == 0)
        ports = {orjson.loads((await get(service)).body)["port"] for _ in range(6)}
        assert ports == {a.port, b.port}
        a.health_status = 200
        await _until(lambda: web(service)["targets"][a.address]["healthy"])
        ports = {orjson.loads((await get(service)).body)["port"] for _ in range(6)}
        assert ports == {a.port}


def test_the_limit_is_shared_by_the_gateway_processes():
    settings = settings_for(["127.0.0.1:1"], workers=4)
    assert ProxyService(settings, None, processes=2).pools["web"].limit == 2
    assert ProxyService(settings, None, processes=3).pools["web"].limit == 1  # never above 4
    assert ProxyService(settings, None, processes=8).pools["web"].limit == 1


@run_async
async def test_removed_target_drains_its_requests_first():
    async with upstreams(2) as [a, b], proxy([a.address], deregistration_delay="5s") as service:
        pool = service.pools["web"]
        in_flight = asyncio.create_task(get(service, "/slow?delay=0.4"))
        await _until(lambda: a.in_progress == 1)
        pool.set_targets([(b.address, "active")])
        ports = {orjson.loads((await get(service)).body)["port"] for _ in range(4)}
        assert ports == {b.port}
        assert a.address in web(service)["targets"]  # still draining
        assert (await in_flight).status == 200
        assert a.address not in web(service)["targets"]
    async with upstreams() as [a], proxy([a.address], deregistration_delay="200ms") as service:
        stuck = asyncio.create_task(get(service, "/slow?delay=5"))
        await _until(lambda: a.in_progress == 1)
        service.pools["web"].set_targets([])
        await _until(lambda: a.address not in web(service)["targets"], timeout=3)
        assert (await stuck).status == 502  # cut off after the deregistration delay


@run_async
async def test_large_bodies_stream_both_ways_without_piling_up():
    size = 48 * 1024 * 1024
    async with upstreams() as [app], proxy([app.address]) as service:
        tracemalloc.start()
        try:
            download = FakeResponse(keep_body=False, write_delay=0.0005)
            await answer(service, make_request("GET", f"/big?size={size}"), download)
            _, download_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            block = bytes(range(256)) * 256
            digest = hashlib.sha256()
            for _ in range(512):
                digest.update(block)
            expected = digest.hexdigest()
            uploads = {}
            for length in (len(block) * 512, None):  # content-length, then chunked
                body = FakeBody([block] * 512, content_length=length)
                headers = [(b"host", b"x")] + ([(b"transfer-encoding", b"chunked")]
                                               if length is None else [])
                response = FakeResponse()
                await answer(service, make_request("PUT", "/echo", headers=headers, body=body),
                             response)
                uploads[length] = orjson.loads(response.body)
            _, upload_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert download.status == 200 and download.size == size
        assert download.sha256.hexdigest() == hashlib.sha256(b"x" * size).hexdigest()
        assert download_peak < 4 * 1024 * 1024, download_peak
        for seen in uploads.values():
            assert seen["body_size"] == 512 * len(block)
            assert seen["body_sha256"] == expected
        assert upload_peak < 4 * 1024 * 1024, upload_peak


@run_async
async def test_a_response_whose_body_follows_its_head_later():
    from surge.gateway.proxy import forward

    async with upstreams() as [app], proxy([app.address]) as service:
        assert (await get(service)).status == 200  # opens the connection the next ones reuse
        for size in (18, 200_000):  # gathered on the task-free path; streamed past its limit
            pending = asyncio.ensure_future(get(service, f"/split?size={size}"))
            await asyncio.sleep(0.1)  # the head has arrived; the body comes 0.3 s after it
            # On the task-free path a small body is awaited there, with no task.
            assert len(forward._continuations) == 0 or not PATHS["eager"]
            response = await pending
            assert response.status == 200 and response.body == b"s" * size
        assert web(service)["in_flight"] == 0


@run_async
async def test_a_body_sent_after_a_head_response_never_reaches_the_next_request():
    # Starman writes the body a PSGI app returns even for HEAD, after the head. The
    # connection that carried the HEAD is not reused, so those bytes cannot be taken for
    # the start of the next response (a 502 before).
    async with upstreams() as [app], proxy([app.address]) as service:
        head = await get(service, "/split?size=18&pause=0.3", method="HEAD")
        assert head.status == 200 and head.body == b""
        after = await get(service, "/echo?after=head")
        assert after.status == 200
        assert orjson.loads(after.body)["target"] == "/echo?after=head"
        await asyncio.sleep(0.4)  # the HEAD's body arrives, on a connection no one uses
        again = await get(service, "/echo?again")
        assert again.status == 200 and orjson.loads(again.body)["target"] == "/echo?again"
        assert web(service)["gateway_502"] == 0


class _GoneClient(FakeResponse):
    async def write(self, data: bytes) -> None:
        raise ConnectionResetError("client went away")


@run_async
async def test_failures_mid_response_free_the_slot_and_the_connection():
    async with upstreams() as [app], proxy([app.address], workers=1) as service:
        cut = FakeResponse()
        with pytest.raises(UpstreamBroken):  # the server then closes the client connection
            await answer(service, make_request("GET", "/cut"), cut)
        assert cut.started and not cut.ended
        with pytest.raises(ConnectionResetError):
            await answer(service, make_request("GET", "/big?size=10000000"), _GoneClient())
        stats = web(service)
        assert stats["in_flight"] == 0
        assert stats["targets"][app.address]["idle_connections"] == 0  # both were closed
        assert (await get(service)).status == 200  # and the single slot is free again


@run_async
async def test_targets_follow_the_admin_feed():
    admin = await AdminFake().start()
    async with upstreams(2) as [a, b], contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(admin.stop)
        admin.publish({"web": [{"address": a.address, "state": "active"}]})
        async with proxy([], targets_from=f"http://127.0.0.1:{admin.port}") as service:
            assert set(web(service)["targets"]) == {a.address}  # start() waited for it
            assert (await get(service)).status == 200
            admin.publish({"web": [{"address": a.address, "state": "draining"},
                                   {"address": b.address, "state": "active"}]})
            await _until(lambda: web(service)["targets"].get(b.address) is not None)
            assert web(service)["targets"][a.address]["state"] == "draining"
            ports = {orjson.loads((await get(service)).body)["port"] for _ in range(4)}
            assert ports == {b.port}
            admin.publish({"web": [{"address": b.address, "state": "active"}]})
            await _until(lambda: a.address not in web(service)["targets"])
            assert admin.polls >= 3


async def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
