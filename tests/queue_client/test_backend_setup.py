"""Choosing a backend from settings, error mapping, and unreachable queues."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from surge.config.settings import QueueBackendSettings
from surge.errors import ConfigError, QueueError, QueueUnavailable
from surge.httpkit.server import SimpleRequest, SimpleResponse, start_simple_server
from surge.queue.client import MemoryQueueClient, open_queue_client
from surge.queue.client.aws import AwsQueueClient
from surge.queue.client.http import HttpQueueClient
from surge.queue.client.redis_backend import RedisQueueClient
from surge.queue.client.rules import normalize_error_code
from surge.queue.interface import OutgoingMessage, QueueClient
from surge.queue.sigv4 import Credentials

from .servers import free_port, stop, wait_until_listening


def test_open_queue_client_chooses_by_url() -> None:
    def opened(url: str, **extra: object) -> QueueClient:
        return open_queue_client(QueueBackendSettings.model_validate({"url": url, **extra}))

    embedded = opened("embedded", listen="0.0.0.0:9555")
    assert isinstance(embedded, HttpQueueClient)
    assert embedded.endpoint == "http://127.0.0.1:9555/"
    assert isinstance(opened("http://10.0.0.5:9324"), HttpQueueClient)
    assert isinstance(opened("sqs://eu-west-1"), AwsQueueClient)
    assert isinstance(opened("sqs+http://127.0.0.1:4566"), AwsQueueClient)
    assert isinstance(opened("redis://127.0.0.1:6379/0"), RedisQueueClient)
    assert isinstance(opened("memory://a"), MemoryQueueClient)
    with pytest.raises(ConfigError, match=r"queue_backend\.url"):
        opened("amqp://rabbit")


def test_memory_urls_share_queues_by_name() -> None:
    async def scenario() -> None:
        settings = QueueBackendSettings.model_validate({"url": "memory://shared-test"})
        producer, consumer = open_queue_client(settings), open_queue_client(settings)
        await producer.create_queue("q")
        await producer.send("q", OutgoingMessage("across clients"))
        [message] = await consumer.receive("q")
        assert message.body == "across clients"

    asyncio.run(scenario())


def test_error_codes_are_normalized() -> None:
    assert normalize_error_code("AWS.SimpleQueueService.NonExistentQueue") == "QueueDoesNotExist"
    assert normalize_error_code("com.amazonaws.sqs#QueueDoesNotExist") == "QueueDoesNotExist"
    assert normalize_error_code("QueueAlreadyExists") == "QueueNameExists"
    assert normalize_error_code("InvalidParameterValue") == "InvalidParameterValue"


def test_http_error_responses_map_to_surge_errors() -> None:
    answers = {
        "GetQueueUrl": SimpleResponse(
            400, orjson.dumps({"__type": "com.amazonaws.sqs#QueueDoesNotExist",
                               "message": "nope"}),
            headers=[("x-amzn-query-error", "AWS.SimpleQueueService.NonExistentQueue;Sender")]),
        "SendMessage": SimpleResponse(500, b'{"__type": "InternalError"}'),
        "DeleteMessage": SimpleResponse(503, b"<html>bad gateway</html>"),
        "ChangeMessageVisibility": SimpleResponse(
            400, orjson.dumps({"__type": "com.amazonaws.sqs#MessageNotInflight"})),
        "ReceiveMessage": SimpleResponse(200, b"not json"),
        "GetQueueAttributes": SimpleResponse(
            400, orjson.dumps({"__type": "com.amazonaws.sqs#RequestThrottled"})),
    }
    seen_targets: list[str] = []

    async def handler(request: SimpleRequest) -> SimpleResponse:
        target = request.headers["x-amz-target"].removeprefix("AmazonSQS.")
        seen_targets.append(target)
        assert request.headers["content-type"] == "application/x-amz-json-1.0"
        assert "Credential=surge/" in request.headers["authorization"]
        if target == "CreateQueue":
            name = orjson.loads(request.body)["QueueName"]
            return SimpleResponse(200, orjson.dumps({"QueueUrl": f"http://x/000/{name}"}))
        return answers[target]

    async def scenario() -> None:
        server = await start_simple_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = HttpQueueClient(f"http://127.0.0.1:{port}")
        with pytest.raises(QueueError) as caught:
            await client.get_queue_url("missing")
        assert caught.value.code == "QueueDoesNotExist" and caught.value.sender_fault
        await client.create_queue("q")
        with pytest.raises(QueueUnavailable, match="InternalError"):
            await client.send("q", OutgoingMessage("x"))
        with pytest.raises(QueueUnavailable, match="503"):
            await client.delete("q", "handle")
        with pytest.raises(QueueError) as caught:
            await client.change_visibility("q", "handle", 5)
        assert caught.value.code == "MessageNotInflight"
        with pytest.raises(QueueUnavailable, match="invalid JSON"):
            await client.receive("q")
        with pytest.raises(QueueUnavailable, match="RequestThrottled"):
            await client.get_attributes("q")
        await client.close()
        server.close()

    asyncio.run(scenario())
    assert seen_targets[0] == "GetQueueUrl"


@pytest.mark.parametrize("kind", ["http", "aws", "redis"])
def test_unreachable_queue_is_unavailable(kind: str) -> None:
    port = free_port()  # nothing listens here

    async def scenario() -> None:
        client: QueueClient
        if kind == "http":
            client = HttpQueueClient(f"http://127.0.0.1:{port}")
        elif kind == "aws":
            client = AwsQueueClient("us-east-1", endpoint_url=f"http://127.0.0.1:{port}",
                                    access_key_id="x", secret_access_key="y", connect_timeout=1)
        else:
            client = RedisQueueClient(f"redis://127.0.0.1:{port}/0")
        try:
            with pytest.raises(QueueUnavailable):
                await client.send("q", OutgoingMessage("lost?"))
        finally:
            await client.close()

    asyncio.run(scenario())


def test_http_and_aws_backends_interoperate(moto_url: str) -> None:
    """A message sent unsigned over JSON 1.0 is read back through botocore unchanged."""

    async def scenario() -> None:
        http = HttpQueueClient(moto_url)
        aws = AwsQueueClient("us-east-1", endpoint_url=moto_url,
                             access_key_id="testing", secret_access_key="testing")
        attributes = {"blob": {"DataType": "Binary", "BinaryValue": "AAEC/w=="},
                      "text": {"DataType": "String", "StringValue": "héllo"}}
        try:
            await http.create_queue("interop")
            sent = await aws.send("interop", OutgoingMessage("from aws", attributes=attributes))
            [message] = await http.receive("interop", wait_seconds=2)
            assert (message.message_id, message.body) == (sent.message_id, "from aws")
            assert message.message_attributes == attributes
            await http.send("interop", OutgoingMessage("from http", attributes=attributes))
            [message] = await aws.receive("interop", wait_seconds=2)
            assert message.body == "from http"
            assert message.message_attributes == attributes
        finally:
            await http.close()
            await aws.close()

    asyncio.run(scenario())


def test_http_client_survives_a_queue_server_restart(tmp_path: Path) -> None:
    """kill -9 the server: calls fail as QueueUnavailable; once it is back the same client
    works again (its pooled connections to the dead process are dropped, not reused)."""
    port = free_port()
    command = [sys.executable, "-c", "from surge.cli import main; main()", "queue", "serve",
               "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path)]

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        wait_until_listening(port, process, "surge queue serve")
        return process

    async def scenario() -> None:
        client = HttpQueueClient(f"http://127.0.0.1:{port}", timeout=3)
        server = start()
        try:
            await client.create_queue("q")
            sent = await client.send("q", OutgoingMessage("acknowledged"))
            server.kill()
            server.wait()
            with pytest.raises(QueueUnavailable):
                await client.send("q", OutgoingMessage("not stored"))
            server = start()
            [message] = await client.receive("q", max_messages=10, wait_seconds=2)
            assert message.message_id == sent.message_id  # it was durable
        finally:
            await client.close()
            stop(server)

    asyncio.run(scenario())


def test_embedded_access_keys_come_from_settings(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """open_queue_client signs with the first configured key (its secret from the
    environment, as the server's), which the embedded server verifies; an unsigned client,
    a wrong secret and another key id are refused."""
    monkeypatch.setenv("SURGE_TEST_QUEUE_SECRET", "the-shared-secret")
    port = free_port()
    config = tmp_path / "surge.toml"
    config.write_text(
        f'[queue_backend]\nlisten = "127.0.0.1:{port}"\ndisk_reserve = 0\n'
        'access_keys = [{ id = "AKIDSURGE", secret_env = "SURGE_TEST_QUEUE_SECRET" }]\n')
    server = subprocess.Popen(
        [sys.executable, "-c", "from surge.cli import main; main()", "queue", "serve",
         "-c", str(config), "--data-dir", str(tmp_path / "data")], stderr=subprocess.DEVNULL)

    async def scenario() -> None:
        settings = QueueBackendSettings.model_validate({
            "listen": f"127.0.0.1:{port}",
            "access_keys": [{"id": "AKIDSURGE", "secret_env": "SURGE_TEST_QUEUE_SECRET"}]})
        allowed = open_queue_client(settings)
        endpoint = f"http://127.0.0.1:{port}"
        refused = [
            (HttpQueueClient(endpoint, access_key_id="AKIDSURGE"), "IncompleteSignature"),
            (HttpQueueClient(endpoint, credentials=Credentials(
                "AKIDSURGE", "not-the-secret", "us-east-1")), "SignatureDoesNotMatch"),
            (HttpQueueClient(endpoint, credentials=Credentials(
                "AKIDOTHER", "the-shared-secret", "us-east-1")), "InvalidClientTokenId"),
        ]
        try:
            await allowed.create_queue("q")
            await allowed.send("q", OutgoingMessage("signed"))
            [message] = await allowed.receive("q", max_messages=1)
            await allowed.delete("q", message.receipt_handle)
            for client, code in refused:
                with pytest.raises(QueueError) as caught:
                    await client.get_queue_url("q")
                assert caught.value.code == code
        finally:
            await allowed.close()
            for client, _ in refused:
                await client.close()

    try:
        wait_until_listening(port, server, "surge queue serve")
        asyncio.run(scenario())
    finally:
        stop(server)
