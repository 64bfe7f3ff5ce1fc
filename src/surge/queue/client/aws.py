"""The aws backend: Amazon SQS (or any signed SQS endpoint) through aiobotocore.

botocore finds the credentials (environment, profile, instance role), signs every request
(SigV4) and retries throttling and connection errors with its standard policy; this module
only translates between the ``QueueClient`` verbs and botocore's calls and errors.
aiobotocore is imported when this backend is chosen, never otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import re
from typing import Any

from surge.errors import QueueError, QueueUnavailable
from surge.queue.client.rules import normalize_error_code
from surge.queue.client.sqs_verbs import UNAVAILABLE_CODES, SqsVerbsClient


def _import_aiobotocore() -> Any:
    try:
        from aiobotocore.session import get_session
    except ImportError as exc:
        raise ImportError(
            "the aws queue backend needs aiobotocore: pip install 'surge[aws]'"
        ) from exc
    return get_session


class AwsQueueClient(SqsVerbsClient):
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
        super().__init__()
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

    async def _call(self, action: str, params: dict[str, Any], queue: str | None = None,
                    *, wait_seconds: float = 0) -> dict[str, Any]:
        # read_timeout (40 s) is above the longest long poll (20 s): wait_seconds needs nothing.
        from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

        operation = _operation_name(action)
        try:
            client = await self._sqs()
            response: dict[str, Any] = await getattr(client, operation)(**params)
            return response
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = normalize_error_code(str(error.get("Code", "")))
            message = str(error.get("Message", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400))
            if status >= 500 or code in UNAVAILABLE_CODES:
                raise QueueUnavailable(f"{operation}: {code}: {message}") from exc
            self._forget_queue(queue, code)
            raise QueueError(code, message, sender_fault=error.get("Type") != "Receiver") from exc
        except ParamValidationError as exc:  # checked by botocore before sending
            raise QueueError("InvalidParameterValue", str(exc)) from exc
        except BotoCoreError as exc:  # no connection, timeout, no credentials
            raise QueueUnavailable(f"{operation}: {exc}") from exc

    def _outgoing(self, params: dict[str, Any]) -> None:
        _decode_binary_attributes(params)


@functools.cache  # a handful of actions, each looked up on every call
def _operation_name(action: str) -> str:
    """botocore's method for an SQS action: ``SendMessageBatch`` → ``send_message_batch``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower()


def _decode_binary_attributes(fields: dict[str, Any]) -> None:
    """botocore takes blob values as bytes; the interface carries them base64 as on the wire."""
    for value in fields.get("MessageAttributes", {}).values():
        if isinstance(value.get("BinaryValue"), str):
            value["BinaryValue"] = base64.b64decode(value["BinaryValue"])
