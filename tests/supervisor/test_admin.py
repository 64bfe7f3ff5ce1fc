"""The admin API's routing and validation, against a fake supervisor (no sockets)."""

import asyncio

import orjson

from surge.httpkit.server import SimpleRequest
from surge.supervisor.admin import AdminApi, NotFound
from surge.supervisor.policy import check_bounds
from surge.supervisor.targets import TargetTable


class FakeControl:
    def __init__(self):
        self.targets = TargetTable(["web"])
        self.targets.register("web", "127.0.0.1:5001")
        self.changed = asyncio.Event()
        self.scaled = []

    async def state(self):
        return {"processes": []}

    def targets_snapshot(self):
        return self.targets.snapshot()

    async def wait_targets_change(self, known_version, timeout):
        try:
            async with asyncio.timeout(timeout):
                await self.changed.wait()
        except TimeoutError:
            pass

    def scale_pool(self, pool, desired):
        if pool != "web":
            raise NotFound(f"no pool named {pool!r}")
        self.scaled.append((pool, check_bounds("pool 'web' desired", desired, 1, 4)))
        return {"pool": pool, "desired": desired}

    def scale_workers(self, group, processes):
        raise NotFound(f"no worker group named {group!r}")

    def drain_target(self, pool, address):
        if not self.targets.drain(pool, address, 0.0, 30.0):
            raise NotFound(f"pool {pool!r} has no target {address!r}")
        return {"state": "draining"}


def call(api, method, path, body=b"", query=""):
    request = SimpleRequest(method, path, query, {}, body, ("127.0.0.1", 1))
    response = asyncio.run(api.handle(request))
    return response.status, orjson.loads(response.body)


def test_scale_within_bounds():
    control = FakeControl()
    status, document = call(AdminApi(control), "POST", "/v1/pools/web/scale", b'{"desired": 3}')
    assert status == 200 and document == {"pool": "web", "desired": 3}
    assert control.scaled == [("web", 3)]


def test_scale_out_of_bounds_is_400_with_message():
    status, document = call(AdminApi(FakeControl()), "POST", "/v1/pools/web/scale",
                            b'{"desired": 9}')
    assert status == 400
    assert document["error"] == "pool 'web' desired must be between 1 and 4, got 9"


def test_scale_bad_body_and_unknown_names():
    api = AdminApi(FakeControl())
    assert call(api, "POST", "/v1/pools/web/scale", b"not json")[0] == 400
    assert call(api, "POST", "/v1/pools/web/scale", b'{"processes": 2}')[0] == 400
    assert call(api, "POST", "/v1/pools/nope/scale", b'{"desired": 2}')[0] == 404
    assert call(api, "POST", "/v1/workers/nope/scale", b'{"processes": 2}')[0] == 404
    assert call(api, "GET", "/v1/pools/web/scale")[0] == 405
    assert call(api, "GET", "/v1/nothing")[0] == 404


def test_drain_marks_target_draining():
    control = FakeControl()
    api = AdminApi(control)
    status, _ = call(api, "POST", "/v1/pools/web/targets/127.0.0.1:5001/drain")
    assert status == 200
    _, targets = call(api, "GET", "/v1/targets")
    assert targets["pools"]["web"] == [{"address": "127.0.0.1:5001", "state": "draining"}]
    assert call(api, "POST", "/v1/pools/web/targets/127.0.0.1:9/drain")[0] == 404


def test_targets_long_poll_answers_at_once_when_version_differs():
    api = AdminApi(FakeControl())
    status, document = call(api, "GET", "/v1/targets", query="wait=30&version=0")
    assert status == 200 and document["version"] >= 1


def test_targets_long_poll_waits_for_a_change():
    control = FakeControl()
    api = AdminApi(control)
    version = control.targets.version

    async def scenario():
        request = SimpleRequest("GET", "/v1/targets", f"wait=5&version={version}", {}, b"",
                                ("127.0.0.1", 1))
        poll = asyncio.create_task(api.handle(request))
        await asyncio.sleep(0.05)
        assert not poll.done()
        control.targets.register("web", "127.0.0.1:5002")
        control.changed.set()
        return orjson.loads((await asyncio.wait_for(poll, 1)).body)

    document = asyncio.run(scenario())
    assert document["version"] == version + 1
    assert len(document["pools"]["web"]) == 2


def test_targets_bad_query_is_400():
    assert call(AdminApi(FakeControl()), "GET", "/v1/targets", query="wait=soon")[0] == 400
