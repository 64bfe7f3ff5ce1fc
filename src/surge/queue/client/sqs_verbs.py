"""The ``QueueClient`` verbs for backends that speak SQS's own API (the http and aws ones).

Both build the same request parameters and read the same response documents (``wire``);
they differ only in how one action travels — unsigned AWS JSON over surge's HTTP client, or
botocore — which each supplies as ``_call``. Queue URLs are looked up once per name and
forgotten when the service says the queue no longer exists.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from surge.queue.client import wire
from surge.queue.client.rules import check_batch_size
from surge.queue.interface import BatchFailure, OutgoingMessage, ReceivedMessage, SendResult

# Error codes meaning the service could not take the request now (``QueueUnavailable``: the
# caller cannot count on the work being stored), not that it refused it (``QueueError``).
UNAVAILABLE_CODES = frozenset(
    {"ServiceUnavailable", "InternalError", "InternalFailure", "RequestThrottled",
     "ThrottlingException", "KmsThrottled"}
)


class SqsVerbsClient(ABC):
    def __init__(self) -> None:
        self._queue_urls: dict[str, str] = {}

    @abstractmethod
    async def _call(self, action: str, params: dict[str, Any], queue: str | None = None,
                    *, wait_seconds: float = 0) -> dict[str, Any]:
        """Perform ``action`` (SQS's name: ``SendMessageBatch``); raise ``QueueError`` or
        ``QueueUnavailable``. ``wait_seconds``: a long poll that holds the call that long."""

    def _outgoing(self, params: dict[str, Any]) -> None:  # noqa: B027 - an optional hook
        """Adjust the parameters of one message to send, in place; by default they go as
        they are (the aws backend decodes binary attributes for botocore)."""

    def _forget_queue(self, queue: str | None, code: str) -> None:
        """After an error: a queue deleted (maybe re-created) is looked up again next time."""
        if queue is not None and code == "QueueDoesNotExist":
            self._queue_urls.pop(queue, None)

    async def create_queue(self, name: str, attributes: dict[str, str] | None = None) -> str:
        params: dict[str, Any] = {"QueueName": name}
        if attributes:
            params["Attributes"] = attributes
        url = str((await self._call("CreateQueue", params))["QueueUrl"])
        self._queue_urls[name] = url
        return url

    async def get_queue_url(self, name: str) -> str:
        if name.startswith(("https://", "http://")):
            return name  # already a queue URL (as SQS consoles and CloudFormation give them)
        url = self._queue_urls.get(name)
        if url is None:
            url = str((await self._call("GetQueueUrl", {"QueueName": name}))["QueueUrl"])
            self._queue_urls[name] = url
        return url

    async def send(self, queue: str, message: OutgoingMessage) -> SendResult:
        params = wire.send_message_params(await self.get_queue_url(queue), message)
        self._outgoing(params)
        return wire.parse_send_result(await self._call("SendMessage", params, queue))

    async def send_batch(
        self, queue: str, messages: list[OutgoingMessage]
    ) -> tuple[list[SendResult | None], list[BatchFailure]]:
        check_batch_size(messages)
        params = wire.send_batch_params(await self.get_queue_url(queue), messages)
        for entry in params["Entries"]:
            self._outgoing(entry)
        response = await self._call("SendMessageBatch", params, queue)
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
        response = await self._call("ReceiveMessage", params, queue, wait_seconds=wait_seconds)
        return wire.parse_received(response)

    async def delete(self, queue: str, receipt_handle: str) -> None:
        params = {"QueueUrl": await self.get_queue_url(queue), "ReceiptHandle": receipt_handle}
        await self._call("DeleteMessage", params, queue)

    async def delete_batch(self, queue: str, receipt_handles: list[str]) -> list[BatchFailure]:
        check_batch_size(receipt_handles)
        params = wire.delete_batch_params(await self.get_queue_url(queue), receipt_handles)
        return wire.parse_failures(await self._call("DeleteMessageBatch", params, queue))

    async def change_visibility(self, queue: str, receipt_handle: str, timeout: int) -> None:
        params = {
            "QueueUrl": await self.get_queue_url(queue),
            "ReceiptHandle": receipt_handle,
            "VisibilityTimeout": timeout,
        }
        await self._call("ChangeMessageVisibility", params, queue)

    async def change_visibility_batch(
        self, queue: str, entries: list[tuple[str, int]]
    ) -> list[BatchFailure]:
        check_batch_size(entries)
        params = wire.change_visibility_batch_params(await self.get_queue_url(queue), entries)
        return wire.parse_failures(await self._call("ChangeMessageVisibilityBatch", params, queue))

    async def get_attributes(self, queue: str, names: list[str] | None = None) -> dict[str, str]:
        params = {"QueueUrl": await self.get_queue_url(queue), "AttributeNames": names or ["All"]}
        response = await self._call("GetQueueAttributes", params, queue)
        return {k: str(v) for k, v in response.get("Attributes", {}).items()}
