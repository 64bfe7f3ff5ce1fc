"""surge.httpkit.client against real sockets on port 0: keep-alive, framing, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from surge.errors import QueueNotReached, QueueUnavailable
from surge.httpkit.client import (
    HttpClient,
    HttpClientError,
    HttpConnectError,
    HttpNotSent,
    HttpTimeout,
    Origin,
)
from surge.queue.client.batching import BatchingSender
from surge.queue.client.http import HttpQueueClient
from surge.queue.interface import OutgoingMessage

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: RawHandler) -> tuple[asyncio.Server, str, list[int]]:
    """A raw TCP server; returns it, its URL and a list counting accepted connections."""
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", accepted


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


async def keep_alive_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            head, body = await read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        payload = head.split(b"\r\n")[0] + b"|" + body
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Test: a\r\nX-Test: b\r\n\r\n%s"
                     % (len(payload), payload))
        await writer.drain()


def test_keep_alive_reuses_one_connection() -> None:
    async def scenario() -> None:
        server, url, accepted = await serve(keep_alive_echo)
        client = HttpClient()
        for index in range(5):
            response = await client.request("POST", f"{url}/path?x={index}", body=b"hello")
            assert response.status == 200
            assert response.body == f"POST /path?x={index} HTTP/1.1|hello".encode()
            assert response.header("x-test") == "b"
        assert len(accepted) == 1
        await client.close()
        server.close()

    asyncio.run(scenario())


def test_works_on_uvloop() -> None:
    import uvloop

    async def scenario() -> None:
        server, url, _ = await serve(keep_alive_echo)
        client = HttpClient()
        responses = await asyncio.gather(*(client.request("GET", url) for _ in range(3)))
        assert [r.status for r in responses] == [200] * 3
        await client.close()
        server.close()

    uvloop.run(scenario())


def test_concurrent_requests_open_parallel_connections() -> None:
    async def scenario() -> None:
        server, url, accepted = await serve(keep_alive_echo)
        client = HttpClient()
        responses = await asyncio.gather(*(client.request("GET", url) for _ in range(4)))
        assert all(r.status == 200 for r in responses)
        assert len(accepted) == 4
        await asyncio.gather(*(client.request("GET", url) for _ in range(4)))
        assert len(accepted) == 4  # all four went back to the pool and were reused
        await client.close()
        server.close()

    asyncio.run(scenario())


def test_connections_per_host_are_capped() -> None:
    async def scenario() -> None:
        server, url, accepted = await serve(keep_alive_echo)
        client = HttpClient(max_connections_per_host=2)
        responses = await asyncio.gather(*(client.request("GET", url) for _ in range(10)))
        assert all(r.status == 200 for r in responses)
        assert len(accepted) == 2
        await client.close()
        server.close()

    asyncio.run(scenario())


def test_chunked_and_close_delimited_bodies() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        await writer.drain()

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\nthe end")
        await writer.drain()

    async def scenario() -> None:
        client = HttpClient()
        server, url, _ = await serve(chunked)
        assert (await client.request("GET", url)).body == b"hello world"
        server.close()
        server, url, _ = await serve(until_close)
        response = await client.request("GET", url)
        assert (response.status, response.body) == (404, b"the end")
        server.close()
        await client.close()

    asyncio.run(scenario())


def test_stale_idle_connection_is_retried_once_when_allowed() -> None:
    async def drops_second_request(reader: asyncio.StreamReader,
                                   writer: asyncio.StreamWriter) -> None:
        # Answers one request with keep-alive, then closes on the next without answering,
        # as a server does when its idle timeout fires while the request is on its way.
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)

    async def scenario() -> None:
        server, url, accepted = await serve(drops_second_request)
        client = HttpClient()
        await client.request("POST", url, body=b"1")
        response = await client.request("POST", url, body=b"2", retry_stale=True)
        assert response.body == b"ok"
        assert len(accepted) == 2  # the retry went out on a fresh connection
        with pytest.raises(HttpConnectError):  # a POST is not repeated unless allowed
            await client.request("POST", url, body=b"3")
        await client.close()
        server.close()

    asyncio.run(scenario())


def test_timeout_and_connection_errors() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def scenario() -> None:
        client = HttpClient()
        server, url, _ = await serve(silent)
        with pytest.raises(HttpTimeout):
            await client.request("GET", url, timeout=0.2)
        server.close()
        server, url, _ = await serve(hang_up)
        with pytest.raises(HttpConnectError, match="closed before the response ended"):
            await client.request("GET", url)
        server.close()
        server, url, _ = await serve(garbage)
        with pytest.raises(HttpConnectError, match="malformed"):
            await client.request("GET", url)
        server.close()
        await server.wait_closed()
        with pytest.raises(HttpConnectError, match="cannot connect"):
            await client.request("GET", url)
        await client.close()

    asyncio.run(scenario())


def test_only_a_request_that_never_left_is_not_sent() -> None:
    """``HttpNotSent`` (and ``QueueNotReached`` above it) promises that the server did not
    act on the request: only when no connection opened. A request that went out on a
    connection that then broke may have been acted on, even when the stale-connection retry
    then finds the server gone."""
    server: asyncio.Server | None = None

    async def hang_up_after_reading(reader: asyncio.StreamReader,
                                    writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async def answer_once_then_go_away(reader: asyncio.StreamReader,
                                       writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)  # the next request arrives: the server stops listening
        assert server is not None
        server.close()

    async def scenario() -> None:
        nonlocal server
        client = HttpClient()
        server, url, _ = await serve(keep_alive_echo)
        server.close()
        await server.wait_closed()
        with pytest.raises(HttpNotSent, match="cannot connect"):
            await client.request("POST", url, body=b"x")
        with pytest.raises(QueueNotReached):
            await HttpQueueClient(url, http=client).send("jobs", OutgoingMessage("x"))
        with pytest.raises(QueueNotReached):
            await BatchingSender(HttpQueueClient(url, http=client)).send(
                "jobs", OutgoingMessage("x"))
        server, url, _ = await serve(hang_up_after_reading)
        with pytest.raises(HttpConnectError) as broke:
            await client.request("POST", url, body=b"x")
        assert not isinstance(broke.value, HttpNotSent)
        with pytest.raises(QueueUnavailable) as unavailable:
            await BatchingSender(HttpQueueClient(url, http=client)).send(
                "jobs", OutgoingMessage("x"))
        assert not isinstance(unavailable.value, QueueNotReached)
        server.close()
        server, url, _ = await serve(answer_once_then_go_away)
        await client.request("POST", url, body=b"1")
        with pytest.raises(HttpConnectError) as retried:
            await client.request("POST", url, body=b"2", retry_stale=True)
        assert not isinstance(retried.value, HttpNotSent), retried.value
        await client.close()
        with pytest.raises(HttpNotSent, match="closed"):
            await client.request("POST", url, body=b"3")

    asyncio.run(scenario())


def test_a_client_with_connections_stays_on_its_loop() -> None:
    async def first_loop() -> tuple[HttpClient, asyncio.Server, str]:
        server, url, _ = await serve(keep_alive_echo)
        client = HttpClient()
        await client.request("GET", url)
        return client, server, url

    loop = asyncio.new_event_loop()
    try:
        client, server, url = loop.run_until_complete(first_loop())
        with pytest.raises(HttpClientError, match="another event loop"):
            asyncio.run(client.request("GET", url))
        loop.run_until_complete(client.close())
        server.close()
        loop.run_until_complete(server.wait_closed())
    finally:
        loop.close()


def test_origin_parsing() -> None:
    assert Origin.from_url("http://example.com/x") == Origin("http", "example.com", 80)
    assert Origin.from_url("https://h:8443") == Origin("https", "h", 8443)
    assert Origin.from_url("http://127.0.0.1:9324/").host_header == "127.0.0.1:9324"
    with pytest.raises(ValueError):
        Origin.from_url("ftp://h/")
