"""The admin HTTP API of ``surge up``: who may call it, routing and validation. What it acts
on is the ``SupervisorControl`` protocol, so this module is tested without a supervisor or
sockets.

    GET  /v1/ping                                    open: {"ok": true}, nothing else
    GET  /v1/state                                   every process, pool, queue, worker group,
                                                     scaling policies and activity history
    GET  /v1/targets?wait=S&version=V                long poll for the gateways
    POST /v1/pools/<name>/scale      {"desired": n}
    POST /v1/workers/<name>/scale    {"processes": n}
    POST /v1/pools/<name>/targets/<host:port>/drain
    POST /v1/reload                                  reread the config and apply it (202)
    GET  /v1/reload[?id=N]                           a reload (the latest) and its progress

Everything but the ping needs ``Authorization: Bearer TOKEN`` (``surge.admin_token``): 401
without it, 403 with a wrong one. The state and the targets need it too: they list every
PID, port and instance address, which is a map for an attacker; the gateways get the token
from ``surge up``. The ping stays open so a liveness check needs no secret; it tells nothing.
A POST must also be ``Content-Type: application/json`` (415 otherwise: an HTML form or a
``text/plain`` fetch cannot send that cross-site without a CORS preflight, which this API
never grants) and same-origin (403 for a foreign ``Origin`` or ``Sec-Fetch-Site``), so a web
page the operator visits cannot act through the operator's browser even if the token leaked
into it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from surge.admin_token import presented_token, token_matches
from surge.httpkit.server import SimpleRequest, SimpleResponse

MAX_TARGETS_WAIT = 60.0  # a gateway asking for longer still gets an answer within a minute


class NotFound(LookupError):
    """The named pool, worker group or target does not exist."""


class Busy(RuntimeError):
    """The action conflicts with one in progress (a reload while another runs): 409."""


class SupervisorControl(Protocol):
    async def state(self) -> dict[str, Any]: ...

    def targets_snapshot(self) -> dict[str, Any]: ...

    async def wait_targets_change(self, known_version: int, timeout: float) -> None:
        """Return once the targets version differs from ``known_version`` or on timeout."""
        ...

    def scale_pool(self, pool: str, desired: object) -> dict[str, Any]:
        """Raises NotFound or ValueError (message shown to the caller)."""
        ...

    def scale_workers(self, group: str, processes: object) -> dict[str, Any]: ...

    def drain_target(self, pool: str, address: str) -> dict[str, Any]: ...

    def start_reload(self) -> dict[str, Any]:
        """Begin rereading the config; raises Busy while a reload runs."""
        ...

    def reload_report(self, reload_id: int | None = None) -> dict[str, Any]:
        """A reload (the latest by default), its steps so far and its outcome; NotFound if
        there is no such reload."""
        ...


_READS = ("/v1/ping", "/v1/state", "/v1/targets", "/v1/reload")  # GET
_POOL_SCALE = re.compile(r"^/v1/pools/([^/]+)/scale$")
_WORKER_SCALE = re.compile(r"^/v1/workers/([^/]+)/scale$")
_DRAIN = re.compile(r"^/v1/pools/([^/]+)/targets/([^/]+)/drain$")


def json_response(status: int, document: Any) -> SimpleResponse:
    return SimpleResponse(status, orjson.dumps(document) + b"\n", "application/json")


def error(status: int, message: str) -> SimpleResponse:
    return json_response(status, {"error": message})


class AdminApi:
    def __init__(self, control: SupervisorControl, token: str) -> None:
        self._control = control
        self._token = token

    async def handle(self, request: SimpleRequest) -> SimpleResponse:
        path = request.path.rstrip("/") or "/"
        if path == "/v1/ping" and request.method == "GET":
            return json_response(200, {"ok": True})
        refusal = self._refuse_caller(request)
        if refusal is not None:
            return refusal
        if request.method == "GET":
            if path == "/v1/state":
                return json_response(200, await self._control.state())
            if path == "/v1/targets":
                return await self._targets(request.query)
            if path == "/v1/reload":
                return self._reload_report(request.query)
        change = self._change_for(request, path)
        if change is not None and request.method == "POST":
            return self._mutation_refusal(request) or change()
        if change is not None or path in _READS:
            return error(405, f"{path} does not answer {request.method}")
        return error(404, f"no such admin endpoint: {request.method} {request.path}")

    def _change_for(self, request: SimpleRequest,
                    path: str) -> Callable[[], SimpleResponse] | None:
        """The action a POST to ``path`` takes, or None if ``path`` changes nothing."""
        if path == "/v1/reload":
            return lambda: self._act(self._control.start_reload, status=202)
        for pattern, action in ((_POOL_SCALE, self._scale_pool),
                                (_WORKER_SCALE, self._scale_workers),
                                (_DRAIN, self._drain)):
            match = pattern.match(path)
            if match:
                names = [unquote(group) for group in match.groups()]
                return lambda: action(request, *names)
        return None

    def _refuse_caller(self, request: SimpleRequest) -> SimpleResponse | None:
        """401 without a bearer token, 403 with a wrong one (compared in constant time)."""
        presented = presented_token(request.headers.get("authorization"))
        if presented is None:
            response = error(401, "the admin API needs 'Authorization: Bearer TOKEN'; the "
                                  "token is in the data directory's admin.token")
            response.headers.append(("WWW-Authenticate", 'Bearer realm="surge admin"'))
            return response
        if not token_matches(self._token, presented):
            return error(403, "wrong admin token")
        return None

    async def _targets(self, query: str) -> SimpleResponse:
        params = parse_qs(query)
        try:
            wait = min(float(params.get("wait", ["0"])[0]), MAX_TARGETS_WAIT)
            version = int(params.get("version", ["0"])[0])
        except ValueError:
            return error(400, "wait must be seconds and version an integer, "
                              f"got {query!r}")
        if wait > 0 and self._control.targets_snapshot()["version"] == version:
            await self._control.wait_targets_change(version, wait)
        return json_response(200, self._control.targets_snapshot())

    def _reload_report(self, query: str) -> SimpleResponse:
        wanted = parse_qs(query).get("id", [None])[0]
        if wanted is not None and not wanted.isdigit():
            return error(400, f"id must be a reload number, got {wanted!r}")
        return self._act(lambda: self._control.reload_report(
            None if wanted is None else int(wanted)))

    def _scale_pool(self, request: SimpleRequest, pool: str) -> SimpleResponse:
        body = _json_body(request)
        if not isinstance(body, dict) or "desired" not in body:
            return error(400, 'the body must be a JSON object like {"desired": 2}')
        return self._act(lambda: self._control.scale_pool(pool, body["desired"]))

    def _scale_workers(self, request: SimpleRequest, group: str) -> SimpleResponse:
        body = _json_body(request)
        if not isinstance(body, dict) or "processes" not in body:
            return error(400, 'the body must be a JSON object like {"processes": 2}')
        return self._act(lambda: self._control.scale_workers(group, body["processes"]))

    def _drain(self, request: SimpleRequest, pool: str, address: str) -> SimpleResponse:
        return self._act(lambda: self._control.drain_target(pool, address))

    @staticmethod
    def _mutation_refusal(request: SimpleRequest) -> SimpleResponse | None:
        """A change must come as JSON and from no other site than this API's own."""
        cross_site = _cross_site_reason(request.headers)
        if cross_site is not None:
            return error(403, cross_site)
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            return error(415, "a change to surge needs 'Content-Type: application/json', got "
                              f"{request.headers.get('content-type')!r}")
        return None

    @staticmethod
    def _act(action: Any, status: int = 200) -> SimpleResponse:
        try:
            return json_response(status, action())
        except NotFound as exc:
            return error(404, str(exc))
        except Busy as exc:
            return error(409, str(exc))
        except ValueError as exc:
            return error(400, str(exc))


def _json_body(request: SimpleRequest) -> object:
    try:
        return orjson.loads(request.body or b"null")
    except orjson.JSONDecodeError:
        return None


def _cross_site_reason(headers: dict[str, str]) -> str | None:
    """Why a request comes from another site, or None if it does not (no ``Origin``, as from
    curl and the CLI, or an ``Origin`` naming the very host and port it was sent to)."""
    fetch_site = headers.get("sec-fetch-site", "").lower()
    if fetch_site in ("cross-site", "same-site"):
        return f"cross-origin request refused (Sec-Fetch-Site: {fetch_site})"
    origin = headers.get("origin")
    if origin is None:
        return None
    host = headers.get("host", "")
    try:
        parts = urlsplit(origin)
    except ValueError:  # "http://[": not an origin at all
        parts = None
    if parts is not None and parts.scheme in ("http", "https") and parts.netloc \
            and parts.netloc.lower() == host.lower():
        return None
    return f"cross-origin request refused: Origin {origin!r} is not this API ({host!r})"
