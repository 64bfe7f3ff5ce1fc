"""The http backend: SQS's AWS JSON 1.0 protocol over surge's keep-alive client.

Talks to the embedded queue server or any SQS-compatible endpoint (moto, ElasticMQ,
LocalStack). Every action is ``POST /`` with ``X-Amz-Target: AmazonSQS.<Action>``; the queue
URL travels in the body, so requests always go to the configured endpoint whatever host the
server writes into its queue URLs.

With ``credentials`` (the first of ``queue_backend.access_keys``) every request is signed
with SigV4 by ``surge.queue.sigv4``, the code the embedded server verifies with, itself
checked against botocore's signer. Without, requests carry an ``Authorization`` header with
SigV4's *credential scope* (access key id, date, region, ``sqs``) but no signature: it names
the caller, which is what local emulators' service routing reads. Amazon SQS itself is the
aws backend's (botocore finds the credentials and retries).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from surge.errors import QueueError, QueueNotReached, QueueUnavailable
from surge.httpkit.client import HttpClient, HttpClientError, HttpNotSent, HttpResponse, Origin
from surge.queue.client.rules import normalize_error_code
from surge.queue.client.sqs_verbs import UNAVAILABLE_CODES, SqsVerbsClient
from surge.queue.sigv4 import Credentials, Signer

CONTENT_TYPE = "application/x-amz-json-1.0"
# A long poll holds the request open for WaitTimeSeconds; the response may take this much more.
LONG_POLL_MARGIN = 10.0


class HttpQueueClient(SqsVerbsClient):
    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        http: HttpClient | None = None,
        access_key_id: str = "surge",
        region: str = "us-east-1",
        credentials: Credentials | None = None,
    ) -> None:
        super().__init__()
        self.endpoint = endpoint.rstrip("/") + "/"
        self._access_key_id = access_key_id
        self._region = region
        self._signer = Signer(credentials) if credentials is not None else None
        self._host = Origin.from_url(self.endpoint).host_header
        self.timeout = timeout
        self._http = http or HttpClient(connect_timeout=connect_timeout, timeout=timeout)

    async def close(self) -> None:
        await self._http.close()

    async def _call(self, action: str, params: dict[str, Any], queue: str | None = None,
                    *, wait_seconds: float = 0) -> dict[str, Any]:
        # A long poll holds the request open for wait_seconds before answering.
        timeout = self.timeout + wait_seconds + LONG_POLL_MARGIN if wait_seconds else None
        body = orjson.dumps(params)
        headers = [("Host", self._host), ("Content-Type", CONTENT_TYPE),
                   ("X-Amz-Target", f"AmazonSQS.{action}")]
        if self._signer is not None:
            headers = self._signer.sign("POST", "/", "", headers, body)
        else:
            headers.append(("Authorization", self._credential_scope()))
        try:
            response = await self._http.request(
                "POST",
                self.endpoint,
                headers=headers,
                body=body,
                timeout=timeout,
                # SQS delivers at least once; a send repeated after the server dropped an idle
                # connection is as safe as botocore's own retry of it.
                retry_stale=True,
            )
        except HttpNotSent as exc:
            raise QueueNotReached(f"{action} to {self.endpoint}: {exc}") from exc
        except HttpClientError as exc:
            raise QueueUnavailable(f"{action} to {self.endpoint}: {exc}") from exc
        if response.status >= 300:
            error = self._error(action, response)
            if isinstance(error, QueueError):
                self._forget_queue(queue, error.code)
            raise error
        try:
            document = orjson.loads(response.body) if response.body else {}
        except orjson.JSONDecodeError as exc:
            raise QueueUnavailable(f"{action}: the endpoint answered with invalid JSON") from exc
        if not isinstance(document, dict):
            raise QueueUnavailable(f"{action}: the endpoint answered with {type(document)}")
        return document

    def _credential_scope(self) -> str:
        today = time.strftime("%Y%m%d", time.gmtime())
        return (
            f"AWS4-HMAC-SHA256 Credential={self._access_key_id}/{today}/{self._region}/sqs/"
            "aws4_request, SignedHeaders=host;x-amz-target, Signature=unsigned"
        )

    def _error(self, action: str, response: HttpResponse) -> QueueError | QueueUnavailable:
        document: dict[str, Any] = {}
        try:
            parsed = orjson.loads(response.body)
            if isinstance(parsed, dict):
                document = parsed
        except orjson.JSONDecodeError:
            pass
        query_error = response.header("x-amzn-query-error", "") or ""
        query_code, _, fault = query_error.partition(";")
        # Like botocore for awsQueryCompatible services, the query code wins when both are
        # given, so this backend and the aws backend report the same code for the same error.
        raw_code = str(query_code or document.get("__type") or "")
        code = normalize_error_code(raw_code) if raw_code else ""
        message = str(document.get("message") or document.get("Message") or "")
        if response.status == 503 and response.header("x-surge-stored") == "false":
            # The embedded server refused it before changing anything (its disk is full):
            # a rejection, nothing stored, not an unknown outcome.
            return QueueError(code or "ServiceUnavailable", message, sender_fault=False)
        if not code or response.status >= 500 or code in UNAVAILABLE_CODES:
            detail = f"{code}: {message}" if code else response.body[:200].decode("latin-1")
            return QueueUnavailable(f"{action}: HTTP {response.status} {detail}")
        return QueueError(code, message, sender_fault=fault != "Receiver")
