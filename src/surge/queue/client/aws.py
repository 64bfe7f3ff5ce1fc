"""The aws backend: Amazon SQS (or any signed SQS endpoint) through aiobotocore.

botocore finds the credentials (environment, profile, instance role), signs every request
(SigV4) and retries throttling and connection errors with its standard policy; this module
only translates between the ``QueueClient`` verbs and botocore's calls and errors.
aiobotocore is imported when this backend is chosen, never otherwise.
"""

from __future__ import annotations

import base64
import contextlib
from typing import Any

from surge.errors import QueueError, QueueUnavailable
from surge.queue.client import wire
from surge.queue.client.rules import check_batch_size, normalize_error_code
from surge.queue.interface import BatchFailure, OutgoingMessage, ReceivedMessage, SendResult

_UNAVAILABLE_CODES = frozenset(
    {"ServiceUnavailable", "InternalError", "InternalFailure", "RequestThrottled",
     "ThrottlingException", "KmsThrottled"}
)


def _import_aiobotocore() -> Any:
    try:
        from aiobotocore.session import get_session
    except ImportError as exc:
        raise ImportError(
            "the aws queue backend needs aiobotocore: pip install 'surge[aws]'"
        ) from exc
    return get_session


class AwsQueueClient:
    """One aiobotocore SQS client, created on first use (it needs a running loop)."""

    def __init__(
        self,
        region: str,
        *,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        read_timeout: float = 40.0,  # above the longest long poll (20 s)
        connect_timeout: float = 5.0,
        max_pool_connections: int = 50,
    ) -> None:
        get_session = _import_aiobotocore()
        from aiobotocore.config import AioConfig

        self._session = get_session()
        self._region = region
        self._endpoint_url = endpoint_url
        self._credentials = {
            k: v for k, v in (("aws_access_key_id", access_key_id),
                              ("aws_secret_access_key", secret_access_key)) if v is not None
        }
        self._config = AioConfig(
            read_timeout=read_timeout,
            connect_timeout=connect_timeout,
            max_pool_connections=max_pool_connections,
            retries={"mode": "standard"},
        )
        self._exits = contextlib.AsyncExitStack()
        self._client: Any = None
        self._queue_urls: dict[str, str] = {}

    async def create_queue(self, name: str, attributes: dict[str, str] | None = None) -> str:
        params: dict[str, Any] = {"QueueName": name}
        if attributes:
            params["Attributes"] = attributes
        url = str((await self._call("create_queue", params))["QueueUrl"])
        self._queue_urls[name] = url
        return url

    async def get_queue_url(self, name: str) -> str:
        if name.startswith(("https://", "http://")):
            return name  # already a queue URL (as SQS consoles and CloudFormation give them)
        url = self._queue_urls.get(name)
        if url is None:
            url = str((await self._call("get_queue_url", {"QueueName": name}))["QueueUrl"])
            self._queue_urls[name] = url
        return url

    async def send(self, queue: str, message: OutgoingMessage) -> SendResult:
        params = wire.send_message_params(await self.get_queue_url(queue), message)
        _decode_binary_attributes(params)
        return wire.parse_send_result(await self._call("send_message", params, queue))

    async def send_batch(
        self, queue: str, messages: list[OutgoingMessage]
    ) -> tuple[list[SendResult | None], list[BatchFailure]]:
        check_batch_size(messages)
        params = wire.send_batch_params(await self.get_queue_url(queue), messages)
        for entry in params["Entries"]:
            _decode_binary_attributes(entry)
        response = await self._call("send_message_batch", params, queue)
        return wire.parse_send_batch(response, len(messages))

    async def receive(
        self,
        queue: str,
        max_messages: int = 1,
        wait_seconds: float = 0,
        visibility_timeout: int | None = None,
    ) -> list[ReceivedMessage]:
        params = wire.receive_params(
            await self.get_queue_url(queue), max_messages, wait_seconds, visibility_timeout
        )
        return wire.parse_received(await self._call("receive_message", params, queue))

    async def delete(self, queue: str, receipt_handle: str) -> None:
        params = {"QueueUrl": await self.get_queue_url(queue), "ReceiptHandle": receipt_handle}
        await self._call("delete_message", params, queue)

    async def delete_batch(self, queue: str, receipt_handles: list[str]) -> list[BatchFailure]:
        check_batch_size(receipt_handles)
        params = wire.delete_batch_params(await self.get_queue_url(queue), receipt_handles)
        return wire.parse_failures(await self._call("delete_message_batch", params, queue))

    async def change_visibility(self, queue: str, receipt_handle: str, timeout: int) -> None:
        params = {
            "QueueUrl": await self.get_queue_url(queue),
            "ReceiptHandle": receipt_handle,
            "VisibilityTimeout": timeout,
        }
        await self._call("change_message_visibility", params, queue)

    async def change_visibility_batch(
        self, queue: str, entries: list[tuple[str, int]]
    ) -> list[BatchFailure]:
        check_batch_size(entries)
        params = wire.change_visibility_batch_params(await self.get_queue_url(queue), entries)
        return wire.parse_failures(
            await self._call("change_message_visibility_batch", params, queue)
        )

    async def get_attributes(self, queue: str, names: list[str] | None = None) -> dict[str, str]:
        params = {"QueueUrl": await self.get_queue_url(queue), "AttributeNames": names or ["All"]}
        response = await self._call("get_queue_attributes", params, queue)
        return {k: str(v) for k, v in response.get("Attributes", {}).items()}

    async def close(self) -> None:
        await self._exits.aclose()
        self._client = None

    async def _sqs(self) -> Any:
        if self._client is None:
            self._client = await self._exits.enter_async_context(
                self._session.create_client(
                    "sqs",
                    region_name=self._region,
                    endpoint_url=self._endpoint_url,
                    config=self._config,
                    **self._credentials,
                )
            )
        return self._client

    async def _call(self, operation: str, params: dict[str, Any],
                    queue: str | None = None) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

        try:
            client = await self._sqs()
            response: dict[str, Any] = await getattr(client, operation)(**params)
            return response
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = normalize_error_code(str(error.get("Code", "")))
            message = str(error.get("Message", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400))
            if status >= 500 or code in _UNAVAILABLE_CODES:
                raise QueueUnavailable(f"{operation}: {code}: {message}") from exc
            if queue is not None and code == "QueueDoesNotExist":
                self._queue_urls.pop(queue, None)
            raise QueueError(code, message, sender_fault=error.get("Type") != "Receiver") from exc
        except ParamValidationError as exc:  # checked by botocore before sending
            raise QueueError("InvalidParameterValue", str(exc)) from exc
        except BotoCoreError as exc:  # no connection, timeout, no credentials
            raise QueueUnavailable(f"{operation}: {exc}") from exc


def _decode_binary_attributes(fields: dict[str, Any]) -> None:
    """botocore takes blob values as bytes; the interface carries them base64 as on the wire."""
    for value in fields.get("MessageAttributes", {}).values():
        if isinstance(value.get("BinaryValue"), str):
            value["BinaryValue"] = base64.b64decode(value["BinaryValue"])
