"""The admin HTTP API of ``surge up``: routing and validation only. What it acts on is the
``SupervisorControl`` protocol, so this module is tested without a supervisor or sockets.

    GET  /v1/state                                   every process, pool, queue, worker group,
                                                     scaling policies and activity history
    GET  /v1/targets?wait=S&version=V                long poll for the gateways
    POST /v1/pools/<name>/scale      {"desired": n}
    POST /v1/workers/<name>/scale    {"processes": n}
    POST /v1/pools/<name>/targets/<host:port>/drain
"""

from __future__ import annotations

import re
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

import orjson

from surge.httpkit.server import SimpleRequest, SimpleResponse

MAX_TARGETS_WAIT = 60.0  # a gateway asking for longer still gets an answer within a minute


class NotFound(LookupError):
    """The named pool, worker group or target does not exist."""


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


_POOL_SCALE = re.compile(r"^/v1/pools/([^/]+)/scale$")
_WORKER_SCALE = re.compile(r"^/v1/workers/([^/]+)/scale$")
_DRAIN = re.compile(r"^/v1/pools/([^/]+)/targets/([^/]+)/drain$")


def json_response(status: int, document: Any) -> SimpleResponse:
    return SimpleResponse(status, orjson.dumps(document) + b"\n", "application/json")


def error(status: int, message: str) -> SimpleResponse:
    return json_response(status, {"error": message})


class AdminApi:
    def __init__(self, control: SupervisorControl) -> None:
        self._control = control

    async def handle(self, request: SimpleRequest) -> SimpleResponse:
        path = request.path.rstrip("/") or "/"
        if path in ("/v1/state", "/v1/targets"):
            if request.method != "GET":
                return error(405, f"{path} answers GET only")
            if path == "/v1/state":
                return json_response(200, await self._control.state())
            return await self._targets(request.query)
        for pattern, action in ((_POOL_SCALE, self._scale_pool),
                                (_WORKER_SCALE, self._scale_workers),
                                (_DRAIN, self._drain)):
            match = pattern.match(path)
            if match:
                if request.method != "POST":
                    return error(405, f"{path} answers POST only")
                return action(request, *(unquote(group) for group in match.groups()))
        return error(404, f"no such admin endpoint: {request.method} {request.path}")

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
    def _act(action: Any) -> SimpleResponse:
        try:
            return json_response(200, action())
        except NotFound as exc:
            return error(404, str(exc))
        except ValueError as exc:
            return error(400, str(exc))


def _json_body(request: SimpleRequest) -> object:
    try:
        return orjson.loads(request.body or b"null")
    except orjson.JSONDecodeError:
        return None
