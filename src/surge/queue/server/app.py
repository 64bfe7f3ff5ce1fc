"""The queue server's HTTP handler: the liveness ping, signatures, the two SQS protocols.

With access keys configured, every request but the ping must carry a valid SigV4 signature
(``surge.queue.sigv4``) and the signer's key id becomes the SenderId. With none, the server
is for unsigned local use: anything is accepted and the SenderId is whatever key id the
request names. Queue URLs are built from ``base_url`` (configuration), never from the
request's Host header.
"""

from __future__ import annotations

import logging

import orjson

from surge.errors import QueueError
from surge.httpkit import SimpleRequest, SimpleResponse
from surge.ids import random_uuid
from surge.queue.server import wire
from surge.queue.server.service import CallContext, QueueService
from surge.queue.server.store import StoreFailed, StoreFull
from surge.queue.sigv4 import Verifier

log = logging.getLogger("surge.queue.server")

PING_PATH = "/_surge/ping"
# On a 503 whose request changed nothing; other 5xx leave the outcome unknown.
NOT_STORED_HEADER = "x-surge-stored"

DISK_FULL_MESSAGE = ("The queue server's disk is full: this change could not be stored. "
                     "Try again later.")


class QueueApp:
    """A ``SimpleHandler``: one SQS request in, one response out."""

    def __init__(self, service: QueueService, *, base_url: str,
                 verifier: Verifier | None = None) -> None:
        self.service = service
        self.base_url = base_url
        self.verifier = verifier

    async def __call__(self, request: SimpleRequest) -> SimpleResponse:
        if request.path == PING_PATH:
            return self.ping()
        request_id = random_uuid()
        protocol = wire.protocol_of(request.method, request.headers)
        try:
            sender = self._sender(request)
            call = wire.decode(protocol, request.method, request.headers, request.query,
                               request.body)
            context = CallContext(self.base_url, sender, request.path)
            result = await self.service.call(call.action, call.params, context)
        except QueueError as exc:
            response = self._error(protocol, exc, request_id)
            if exc.code == "ServiceUnavailable":
                # Refused before anything changed (a send while the disk is full): tell
                # surge's own client it may answer "not stored", not "maybe stored".
                response.headers.append((NOT_STORED_HEADER, "false"))
            return response
        except StoreFull:
            return self._error(protocol, QueueError("ServiceUnavailable", DISK_FULL_MESSAGE,
                                                    sender_fault=False), request_id)
        except StoreFailed:
            log.critical("queue database failed; the server must restart")
            return self._error(protocol, QueueError("ServiceUnavailable", "storage failed",
                                                    sender_fault=False), request_id)
        body, content_type = wire.encode_result(protocol, call.action, result, request_id)
        return SimpleResponse(200, body, content_type, [("x-amzn-RequestId", request_id)])

    def ping(self) -> SimpleResponse:
        """Liveness, open to all (it tells nothing secret): ``{"status": "ok", "disk_full":
        false}``; ``disk_full`` is true while sends are refused for want of disk space."""
        store = self.service.store
        disk_full = store is not None and store.disk_full
        return SimpleResponse(200, orjson.dumps({"status": "ok", "disk_full": disk_full}),
                              "application/json")

    def _sender(self, request: SimpleRequest) -> str:
        """The access key id that signed the request (refused unless it did, when keys are
        configured); without keys, whichever key id the request names."""
        if self.verifier is not None:
            return self.verifier.verify(request.method, request.path, request.query,
                                        request.header_list, request.body)
        key = wire.access_key_of(request.headers, request.query)
        return key or self.service.broker.account_id

    @staticmethod
    def _error(protocol: str, error: QueueError, request_id: str) -> SimpleResponse:
        status, body, content_type, headers = wire.encode_error(protocol, error, request_id)
        return SimpleResponse(status, body, content_type,
                              [("x-amzn-RequestId", request_id), *headers])
