"""Through the real gateway (`surge gateway`, one process) to Starman and to a Python
upstream: what a client on the wire sees."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .upstreams import starman


@pytest.fixture
def gateway_to_starman(tmp_path: Path) -> Iterator[int]:
    with starman(tmp_path, workers=2) as address:
        config = tmp_path / "surge.toml"
        config.write_text(f"""
data_dir = "{tmp_path / 'data'}"
[gateway]
listen = "127.0.0.1:0"
processes = 1
[gateway.access_log]
enabled = false
[pools.web]
targets = ["{address}"]
workers = 2
max_queued_requests = 4
queue_timeout = "5s"
[[routes]]
prefix = "/"
proxy = {{ pool = "web" }}
""")
        log_path = tmp_path / "gateway.log"
        with log_path.open("w") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "surge.cli", "gateway", "-c", str(config)],
                stdout=subprocess.PIPE, stderr=log_file, text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        assert process.stdout is not None
        drain = threading.Thread(target=process.stdout.read, daemon=True)
        try:
            line = process.stdout.readline()
            assert line, f"gateway did not start: {log_path.read_text()}"
            port = int(json.loads(line)["port"])
            drain.start()  # keep reading so the gateway never blocks on a full pipe
            yield port
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if drain.is_alive():
                drain.join(5)
            process.stdout.close()


def _request(port: int, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_through_the_gateway_to_starman(gateway_to_starman: int) -> None:
    port = gateway_to_starman
    status, _, body = _request(port, "GET", "/echo", headers={
        "Host": "legacy.example", "X-Forwarded-For": "192.0.2.1", "Connection": "keep-alive"})
    assert status == 200
    headers = json.loads(body)["headers"]
    assert headers["HTTP_HOST"] == "legacy.example"
    assert headers["HTTP_X_FORWARDED_FOR"] == "192.0.2.1, 127.0.0.1"
    assert headers["HTTP_X_FORWARDED_PORT"] == str(port)
    assert headers["HTTP_X_REAL_IP"] == "127.0.0.1"

    # one client connection, many requests (keep-alive on both sides)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    pids = set()
    for _ in range(20):
        connection.request("POST", "/echo", body=b"a=1" * 100)
        response = connection.getresponse()
        seen = json.loads(response.read())
        assert response.status == 200 and seen["body_size"] == 300
        pids.add(seen["pid"])
    connection.close()

    # a small chunked response arrives whole in one read (the task-free path re-chunks it),
    # also to an HTTP/1.0 client, which gets it close-delimited
    status, headers, body = _request(port, "GET", "/big?size=10")
    assert status == 200 and body == b"y" * 10 and headers["transfer-encoding"] == "chunked"
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"GET /big?size=10 HTTP/1.0\r\nHost: x\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()
    assert body == b"y" * 10

    # a streamed download Starman sends chunked arrives whole
    size = 4 * 1024 * 1024
    status, _, body = _request(port, "GET", f"/big?size={size}")
    assert status == 200 and len(body) == size and set(body) == {ord("y")}

    # 2 workers, 4 waiting places: of 12 concurrent slow requests some get 503
    began = time.monotonic()
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda _: _request(port, "GET", "/slow"), range(12)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses.count(200) >= 6 and statuses.count(503) >= 1, statuses
    assert all(h.get("retry-after") == "1" for s, h, _ in results if s == 503)
    assert time.monotonic() - began < 10


def test_pipelined_gets_come_back_in_order(gateway_to_starman: int) -> None:
    """Bodiless requests take the task-free path; pipelined, each waits for the one before,
    and a HEAD among them gets a head only."""
    paths = [f"/echo?n={n}" for n in range(8)]
    wire = b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths)
    wire += b"HEAD /echo?n=head HTTP/1.1\r\nHost: x\r\n\r\n"
    wire += b"GET /echo?n=last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gateway_to_starman), timeout=20) as sock:
        sock.sendall(wire)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    responses = received.split(b"HTTP/1.1 ")[1:]
    assert len(responses) == len(paths) + 2
    for n, response in enumerate(responses[:8]):
        assert response.startswith(b"200"), response[:100]
        body = response.partition(b"\r\n\r\n")[2]
        assert json.loads(body)["query"] == f"n={n}", body[:200]
    head_response = responses[8]
    assert head_response.startswith(b"200") and head_response.endswith(b"\r\n\r\n")
    assert json.loads(responses[9].partition(b"\r\n\r\n")[2])["query"] == "n=last"


def test_starman_sees_the_request_the_client_sent(gateway_to_starman: int) -> None:
    """issue 11's reproductions, through `surge gateway` to Starman: an Upgrade with a body,
    trailer fields in the read of the head, an absolute-form target, and a spoofed X-Real-IP
    spelt with underscores; one response each (test_desync.py has every case)."""
    wire = (b"PUT /echo?n=upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
            b"Content-Length: 11\r\n\r\nhello world"
            b"POST /echo?n=trailers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nHost: evil.example\r\nAuthorization: Basic ZTpl\r\n\r\n"
            b"GET http://evil.example/echo?n=absolute HTTP/1.1\r\nHost: x\r\n"
            b"X_Real_IP: 6.6.6.6\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gateway_to_starman), timeout=20) as sock:
        sock.sendall(wire)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    responses = received.split(b"HTTP/1.1 ")[1:]
    assert [r[:3] for r in responses] == [b"200"] * 3, received[:600]
    upgrade, trailers, absolute = (json.loads(r.partition(b"\r\n\r\n")[2]) for r in responses)
    assert upgrade["method"] == "PUT" and upgrade["body_size"] == 11
    assert "HTTP_UPGRADE" not in upgrade["headers"]
    assert trailers["body_size"] == 3 and trailers["headers"]["HTTP_HOST"] == "x"
    assert "HTTP_AUTHORIZATION" not in trailers["headers"]
    assert absolute["query"] == "n=absolute"
    assert absolute["headers"]["HTTP_HOST"] == "evil.example"
    assert absolute["headers"]["HTTP_X_REAL_IP"] == "127.0.0.1"
