"""The queue server's HTTP handler: the liveness ping, access keys, the two SQS protocols."""

from __future__ import annotations

import logging

from surge.errors import QueueError
from surge.httpkit import SimpleRequest, SimpleResponse
from surge.ids import random_uuid
from surge.queue.server import wire
from surge.queue.server.service import CallContext, QueueService
from surge.queue.server.store import StoreFailed

log = logging.getLogger("surge.queue.server")

PING_PATH = "/_surge/ping"


class QueueApp:
    """A ``SimpleHandler``: one SQS request in, one response out."""

    def __init__(self, service: QueueService, *, access_keys: list[str] | None = None,
                 default_host: str = "127.0.0.1:9324") -> None:
        self.service = service
        self.access_keys = frozenset(access_keys or ())
        self.default_host = default_host

    async def __call__(self, request: SimpleRequest) -> SimpleResponse:
        if request.path == PING_PATH:
            return SimpleResponse(200, b"ok")
        request_id = random_uuid()
        protocol = wire.Protocol.JSON if "x-amz-target" in request.headers \
            else wire.Protocol.QUERY
        try:
            call = wire.decode(request.method, request.headers, request.query, request.body)
            sender = self._check_access(request, call.params)
            host = request.headers.get("host") or self.default_host
            context = CallContext(f"http://{host}", sender, request.path)
            result = await self.service.call(call.action, call.params, context)
        except QueueError as exc:
            status, body, content_type, headers = wire.encode_error(protocol, exc, request_id)
            return SimpleResponse(status, body, content_type,
                                  [("x-amzn-RequestId", request_id), *headers])
        except StoreFailed:
            log.critical("queue database failed; the server must restart")
            status, body, content_type, headers = wire.encode_error(
                protocol, QueueError("ServiceUnavailable", "storage failed",
                                     sender_fault=False), request_id)
            return SimpleResponse(status, body, content_type, headers)
        body, content_type = wire.encode_result(protocol, call.action, result, request_id)
        return SimpleResponse(200, body, content_type, [("x-amzn-RequestId", request_id)])

    def _check_access(self, request: SimpleRequest, params: dict[str, object]) -> str:
        key = wire.access_key_of(request.headers, params)
        if self.access_keys and key not in self.access_keys:
            raise QueueError("InvalidClientTokenId",
                             "The security token included in the request is invalid.")
        return key or self.service.broker.account_id
