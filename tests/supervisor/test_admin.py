"""The admin API's callers, routing and validation, against a fake supervisor (no sockets)."""

import asyncio

import orjson
import pytest

from surge.httpkit.server import SimpleRequest
from surge.supervisor.admin import AdminApi, Busy, NotFound
from surge.supervisor.policy import check_bounds
from surge.supervisor.targets import TargetTable


class FakeControl:
    def __init__(self):
        self.targets = TargetTable(["web"])
        self.targets.register("web", "127.0.0.1:5001")
        self.changed = asyncio.Event()
        self.scaled = []
        self.reloads = []

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

    def start_reload(self):
        if self.reloads:
            raise Busy("reload 1 is running")
        self.reloads.append(1)
        return {"id": 1, "state": "waiting"}

    def reload_report(self, reload_id=None):
        if not self.reloads or reload_id not in (None, 1):
            raise NotFound(f"no reload {reload_id}")
        return {"id": 1, "state": "running"}


TOKEN = "k3y-" + "x" * 40
JSON = {"content-type": "application/json"}


def admin_api(control):
    return AdminApi(control, TOKEN)


def call(api, method, path, body=b"", query="", headers=None, token=TOKEN):
    """One request; with the token and, for a POST, a JSON content type unless told."""
    sent = {"host": "127.0.0.1:8081", **(JSON if method == "POST" else {})}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    sent.update(headers or {})
    sent = {name: value for name, value in sent.items() if value is not None}
    request = SimpleRequest(method, path, query, sent, body, ("127.0.0.1", 1))
    response = asyncio.run(api.handle(request))
    return response.status, orjson.loads(response.body)


def test_scale_within_bounds():
    control = FakeControl()
    status, document = call(admin_api(control), "POST", "/v1/pools/web/scale", b'{"desired": 3}')
    assert status == 200 and document == {"pool": "web", "desired": 3}
    assert control.scaled == [("web", 3)]


def test_scale_out_of_bounds_is_400_with_message():
    status, document = call(admin_api(FakeControl()), "POST", "/v1/pools/web/scale",
                            b'{"desired": 9}')
    assert status == 400
    assert document["error"] == "pool 'web' desired must be between 1 and 4, got 9"


def test_scale_bad_body_and_unknown_names():
    api = admin_api(FakeControl())
    assert call(api, "POST", "/v1/pools/web/scale", b"not json")[0] == 400
    assert call(api, "POST", "/v1/pools/web/scale", b'{"processes": 2}')[0] == 400
    assert call(api, "POST", "/v1/pools/nope/scale", b'{"desired": 2}')[0] == 404
    assert call(api, "POST", "/v1/workers/nope/scale", b'{"processes": 2}')[0] == 404
    assert call(api, "GET", "/v1/pools/web/scale")[0] == 405
    assert call(api, "GET", "/v1/nothing")[0] == 404


def test_drain_marks_target_draining():
    control = FakeControl()
    api = admin_api(control)
    status, _ = call(api, "POST", "/v1/pools/web/targets/127.0.0.1:5001/drain")
    assert status == 200
    _, targets = call(api, "GET", "/v1/targets")
    assert targets["pools"]["web"] == [{"address": "127.0.0.1:5001", "state": "draining"}]
    assert call(api, "POST", "/v1/pools/web/targets/127.0.0.1:9/drain")[0] == 404


def test_targets_long_poll_answers_at_once_when_version_differs():
    api = admin_api(FakeControl())
    status, document = call(api, "GET", "/v1/targets", query="wait=30&version=0")
    assert status == 200 and document["version"] >= 1


def test_targets_long_poll_waits_for_a_change():
    control = FakeControl()
    api = admin_api(control)
    version = control.targets.version

    async def scenario():
        request = SimpleRequest("GET", "/v1/targets", f"wait=5&version={version}",
                                {"authorization": f"Bearer {TOKEN}"}, b"", ("127.0.0.1", 1))
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
    assert call(admin_api(FakeControl()), "GET", "/v1/targets", query="wait=soon")[0] == 400


EVERY_CALL = [("GET", "/v1/state", b""), ("GET", "/v1/targets", b""),
              ("GET", "/v1/reload", b""), ("POST", "/v1/reload", b"{}"),
              ("POST", "/v1/pools/web/scale", b'{"desired": 2}'),
              ("POST", "/v1/workers/images/scale", b'{"processes": 0}'),
              ("POST", "/v1/pools/web/targets/127.0.0.1:5001/drain", b""),
              ("GET", "/v1/no-such-thing", b"")]


@pytest.mark.parametrize(("method", "path", "body"), EVERY_CALL)
def test_without_a_token_nothing_answers_but_401(method, path, body):
    control = FakeControl()
    api = admin_api(control)
    for authorization in (None, "Basic dXNlcjpwYXNz", "Bearer", f"Token {TOKEN}"):
        request = SimpleRequest(method, path, "", {"authorization": authorization, **JSON}
                                if authorization else JSON, body, ("10.0.0.9", 1))
        response = asyncio.run(api.handle(request))
        assert response.status == 401, authorization
        assert ("WWW-Authenticate", 'Bearer realm="surge admin"') in response.headers
        assert b"127.0.0.1:5001" not in response.body
    assert control.scaled == [] and control.reloads == []
    assert control.targets.state_of("web", "127.0.0.1:5001") == "active"


@pytest.mark.parametrize(("method", "path", "body"), EVERY_CALL)
def test_a_wrong_token_is_403(method, path, body):
    control = FakeControl()
    for wrong in (TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "x" * len(TOKEN), "é" * 5):
        assert call(admin_api(control), method, path, body, token=wrong)[0] == 403
    assert control.scaled == [] and control.reloads == []


def test_bearer_scheme_is_case_insensitive():
    status, _ = call(admin_api(FakeControl()), "GET", "/v1/state", token=None,
                     headers={"authorization": f"bearer  {TOKEN} "})
    assert status == 200


def test_ping_is_open_and_tells_nothing():
    status, document = call(admin_api(FakeControl()), "GET", "/v1/ping", token=None)
    assert (status, document) == (200, {"ok": True})
    assert call(admin_api(FakeControl()), "POST", "/v1/ping", token=None)[0] == 401


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx"])
def test_a_change_needs_a_json_content_type(content_type):
    control = FakeControl()
    status, document = call(admin_api(control), "POST", "/v1/pools/web/scale",
                            b'{"desired": 2}', headers={"content-type": content_type})
    assert status == 415 and "application/json" in document["error"]
    assert control.scaled == []


def test_json_content_type_with_parameters_is_json():
    control = FakeControl()
    status, _ = call(admin_api(control), "POST", "/v1/pools/web/scale", b'{"desired": 2}',
                     headers={"content-type": "Application/JSON; charset=utf-8"})
    assert status == 200 and control.scaled == [("web", 2)]


@pytest.mark.parametrize("headers", [
    {"origin": "https://evil.example"},
    {"origin": "http://127.0.0.1:9999"},  # another port is another origin
    {"origin": "null"},  # sandboxed frames and file:// pages
    {"origin": "http://["},  # no origin at all: refused, not a 500
    {"origin": "http://127.0.0.1:8081", "host": "evil.example:8081"},
    {"origin": "http://127.0.0.1:8081", "sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "same-site"},
])
def test_a_change_from_another_site_is_403(headers):
    control = FakeControl()
    status, document = call(admin_api(control), "POST", "/v1/workers/images/scale",
                            b'{"processes": 0}', headers=headers)
    assert status == 403 and "cross-origin" in document["error"]
    status, _ = call(admin_api(control), "POST", "/v1/pools/web/targets/127.0.0.1:5001/drain",
                     headers=headers)
    assert status == 403
    assert control.targets.state_of("web", "127.0.0.1:5001") == "active"


def test_a_change_from_the_same_origin_is_allowed():
    control = FakeControl()
    status, _ = call(admin_api(control), "POST", "/v1/pools/web/scale", b'{"desired": 2}',
                     headers={"origin": "http://127.0.0.1:8081", "sec-fetch-site": "same-origin"})
    assert status == 200 and control.scaled == [("web", 2)]


def test_reload_starts_once_and_reports():
    api = admin_api(FakeControl())
    assert call(api, "POST", "/v1/reload", b"{}") == (202, {"id": 1, "state": "waiting"})
    status, document = call(api, "POST", "/v1/reload", b"{}")
    assert status == 409 and "running" in document["error"]
    assert call(api, "GET", "/v1/reload", query="id=1")[0] == 200
    assert call(api, "GET", "/v1/reload", query="id=2")[0] == 404
    assert call(api, "GET", "/v1/reload", query="id=one")[0] == 400
    assert call(api, "DELETE", "/v1/reload")[0] == 405
    assert call(api, "POST", "/v1/state", b"{}")[0] == 405
