"""``surge gateway`` as a process: static files, enqueue against a real queue server,
task status, SIGTERM, many connections at once, streaming a large body in bounded memory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from gateway_support import (
    Conn,
    Process,
    QueueServer,
    request,
    start_app_server,
    start_gateway,
    write_config,
)

BASE_CONFIG = """
data_dir = "{data}"
[gateway]
listen = "{listen}"
processes = {processes}
max_body_size = "2m"
[gateway.access_log]
path = "{data}/access.log"
[queue_backend]
url = "embedded"
listen = "{queue}"
[queues.jobs]
[[routes]]
prefix = "/jobs"
methods = ["POST"]
enqueue = {{ queue = "jobs", task = "resize" }}
[[routes]]
prefix = "/static/"
static = {{ root = "site", expires = "1d" }}
"""


def gateway_config(tmp_path: Path, queue: str = "127.0.0.1:1", processes: int = 2,
                   listen: str = "127.0.0.1:0") -> Path:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "app.css").write_text("body{}")
    (site / "index.html").write_text("<h1>hi</h1>")
    (tmp_path / "secret.txt").write_text("secret")
    if not (site / "leak").exists():
        os.symlink(tmp_path / "secret.txt", site / "leak")
    return write_config(tmp_path, BASE_CONFIG.format(data=tmp_path / "data", queue=queue,
                                                     processes=processes, listen=listen))


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Process]:
    process = start_gateway(gateway_config(tmp_path))
    yield process
    process.stop()


def get(port: int, target: str, *headers: bytes) -> tuple[int, dict[str, str], bytes]:
    extra = b"".join(h + b"\r\n" for h in headers)
    return request(port, b"GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (target.encode(), extra))


def test_static_file_headers_and_304(gateway: Process) -> None:
    status, headers, body = get(gateway.port, "/static/app.css")
    assert (status, body) == (200, b"body{}")
    assert headers["content-type"] == "text/css; charset=utf-8"
    assert headers["content-length"] == "6"
    assert headers["cache-control"] == "max-age=86400" and "expires" in headers
    etag, modified = headers["etag"], headers["last-modified"]
    assert get(gateway.port, "/static/app.css", b"If-None-Match: " + etag.encode())[0] == 304
    assert get(gateway.port, "/static/app.css",
               b"If-Modified-Since: " + modified.encode())[0] == 304
    assert get(gateway.port, "/static/", )[2] == b"<h1>hi</h1>"


@pytest.mark.parametrize("target", [
    "/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/..%2fsecret.txt",
    "/static/%252e%252e/secret.txt", "/static/leak", "/static/nothing"])
def test_static_traversal_is_404(gateway: Process, target: str) -> None:
    status, _, body = get(gateway.port, target)
    assert status == 404 and b"secret" not in body


def test_health_and_access_log(gateway: Process, tmp_path: Path) -> None:
    assert get(gateway.port, "/health")[2] == b"OK"
    assert get(gateway.port, "/nope")[0] == 404
    log_path = tmp_path / "data" / "access.log"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (log_path.exists() and log_path.read_text()):
        time.sleep(0.1)
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(e["method"], e["path"], e["status"]) for e in lines] == [("GET", "/nope", 404)]
    assert {"time", "client", "bytes", "duration"} <= set(lines[0])


@contextlib.contextmanager
def queue_with_jobs(tmp_path: Path) -> Iterator[tuple[QueueServer, Any, str]]:
    """A queue server with the queue "jobs": the server, a boto3 client, the queue's URL."""
    queue = QueueServer(tmp_path / "queue-data")
    try:
        sqs: Any = boto3.client(
            "sqs", endpoint_url=queue.endpoint, region_name="us-east-1",
            aws_access_key_id="AKID", aws_secret_access_key="secret",
            config=Config(retries={"max_attempts": 1}))
        yield queue, sqs, sqs.create_queue(QueueName="jobs")["QueueUrl"]
    finally:
        queue.kill()


@contextlib.contextmanager
def running_gateway(config: Path) -> Iterator[Process]:
    process = start_gateway(config)
    try:
        yield process
    finally:
        process.stop()


def test_enqueue_202_only_when_stored_then_503_when_queue_dies(tmp_path: Path) -> None:
    with queue_with_jobs(tmp_path) as (queue, sqs, queue_url), \
            running_gateway(gateway_config(tmp_path, queue.address)) as process:
        raw = b'{"width": 300}'
        status, headers, body = request(process.port, b"POST /jobs HTTP/1.1\r\nHost: x\r\n"
                                        b"Content-Type: application/json\r\n"
                                        b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw))
        assert status == 202, body
        answer = json.loads(body)
        assert answer["status"] == "queued" and headers["location"] == f"/tasks/{answer['id']}"
        messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"]
        envelope = json.loads(messages[0]["Body"])
        assert envelope["id"] == answer["id"] and envelope["task"] == "resize"
        assert envelope["payload"] == {"width": 300} and envelope["timestamp"] > 0
        # the result store says queued
        deadline = time.monotonic() + 5
        while True:
            status, _, body = get(process.port, f"/tasks/{answer['id']}")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 200 and json.loads(body)["status"] == "queued"
        assert get(process.port, "/tasks/no-such-id")[0] == 404
        # invalid JSON: a precise 400
        status, _, body = request(process.port, b"POST /jobs HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Type: application/json\r\n"
                                  b"Content-Length: 5\r\n\r\n{\"a\":")
        assert status == 400 and b"line 1 column" in body
        queue.kill()
        for _ in range(3):
            status, headers, _ = request(process.port, b"POST /jobs HTTP/1.1\r\nHost: x\r\n"
                                         b"Content-Type: application/json\r\n"
                                         b"Content-Length: 2\r\n\r\n{}")
            # The queue's port is closed: the request never left, nothing was stored.
            assert status == 503 and int(headers["retry-after"]) > 0


def post_json(port: int, body: bytes, *headers: bytes,
              content_type: bytes = b"application/json") -> tuple[int, dict[str, str], bytes]:
    extra = b"".join(header + b"\r\n" for header in headers)
    return request(port, b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n%s"
                         b"Content-Length: %d\r\n\r\n%s"
                   % (content_type, extra, len(body), body))


def test_enqueue_refuses_hostile_input_and_keeps_keys_over_real_sockets(tmp_path: Path) -> None:
    """The route's refusals and Idempotency-Key through the real server, queue server and
    SQLite result store (the socket-free suite is tests/gateway/test_enqueue.py)."""
    with queue_with_jobs(tmp_path) as (queue, sqs, queue_url), \
            running_gateway(gateway_config(tmp_path, queue.address, processes=1)) as process:
        port = process.port
        assert post_json(port, b'{"a": 1}', content_type=b"text/plain")[0] == 415
        status, _, body = post_json(port, b"[" * 300 + b"]" * 300)
        assert status == 400 and b"nested deeper than 253 levels" in body
        status, _, body = post_json(port, b"[" * 2000 + b"]" * 2000)
        assert status == 400 and b"nested deeper than 253 levels" in body
        assert post_json(port, b"{}", b"Idempotency-Key: " + b"k" * 256)[0] == 400
        first = post_json(port, b'{"n": 7}', b"Idempotency-Key: order-7")
        again = post_json(port, b'{"n": 7}', b"Idempotency-Key: order-7")
        assert first[0] == again[0] == 202
        assert json.loads(first[2])["id"] == json.loads(again[2])["id"]
        assert again[1]["location"] == first[1]["location"]
        assert again[1]["idempotent-replayed"] == "true"
        assert post_json(port, b'{"n": 8}', b"Idempotency-Key: order-7")[0] == 422
        received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=1).get("Messages", [])
        assert [json.loads(m["Body"])["id"] for m in received] == [json.loads(first[2])["id"]]


def test_sigterm_finishes_in_flight_and_exits_0() -> None:
    app = start_app_server()
    try:
        with Conn(app.port) as busy, Conn(app.port) as idle, Conn(app.port) as fresh:
            idle.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert idle.response()[0] == 200
            busy.send(b"GET /slow?drain HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.1)
            app.popen.send_signal(signal.SIGTERM)
            # Accepted before the signal, its request sent after: still answered, then closed.
            time.sleep(0.1)
            fresh.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = fresh.response()
            assert status == 200 and headers["connection"] == "close"
            assert busy.response()[2] == b"slow drain"
            assert idle.rest() == b""  # idle keep-alive closed
            assert app.popen.wait(10) == 0
    finally:
        app.stop()


def test_gateway_sigterm_exits_0(gateway: Process) -> None:
    with Conn(gateway.port) as idle:
        idle.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.response()[0] == 200
        assert gateway.terminate() == 0
        assert idle.rest() == b""


def test_gateway_processes_run_at_the_configured_priority(tmp_path: Path) -> None:
    import psutil

    config = gateway_config(tmp_path)
    config.write_text(config.read_text().replace("processes = 2\n",
                                                 "processes = 2\npriority = 7\n"))
    process = start_gateway(config)
    try:
        deadline = time.monotonic() + 10
        while len(children := psutil.Process(process.pid).children()) < 2:
            assert time.monotonic() < deadline, "no children"
            time.sleep(0.05)
        assert [p.nice() for p in (psutil.Process(process.pid), *children)] == [7, 7, 7]
        assert get(process.port, "/static/app.css")[0] == 200
    finally:
        process.stop()


def test_dead_gateway_child_is_restarted(gateway: Process) -> None:
    import psutil

    deadline = time.monotonic() + 10
    while len(children := psutil.Process(gateway.pid).children()) < 2:
        assert time.monotonic() < deadline, "no children"
        time.sleep(0.05)
    children[0].kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = {c.pid for c in psutil.Process(gateway.pid).children()}
        if len(now) == 2 and children[0].pid not in now:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the child was not restarted")
    for _ in range(20):  # every slot answers again
        assert get(gateway.port, "/health")[2] == b"OK"


def test_ten_thousand_connections_at_once(tmp_path: Path) -> None:
    process = start_gateway(gateway_config(tmp_path, listen="0.0.0.0:0"))
    sockets: list[socket.socket] = []
    try:
        rss_before = process.rss()
        started = time.monotonic()
        for index in range(10_000):
            host = f"127.0.0.{index % 4 + 1}"
            sockets.append(socket.create_connection((host, process.port), timeout=10))
        for sock in sockets:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        for sock in sockets:
            answer = b""
            while not answer.endswith(b"OK"):
                chunk = sock.recv(4096)
                assert chunk, "closed"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 ")
        per_connection = (process.rss() - rss_before) / len(sockets)
        assert time.monotonic() - started < 30
        assert per_connection < 16 * 1024, per_connection
    finally:
        for sock in sockets:
            sock.close()
        process.stop()


def test_one_gib_body_streams_in_bounded_memory() -> None:
    app = start_app_server(max_body_size=2 * 1024**3, body_timeout=30.0)
    try:
        size = 1024**3
        block = b"x" * (1024 * 1024)
        rss_before = app.rss()
        peak = rss_before
        with Conn(app.port, timeout=60) as conn:
            conn.send(b"POST /discard HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
            for index in range(size // len(block)):
                conn.send(block)
                if index % 64 == 0:
                    peak = max(peak, app.rss())
            status, _, body = conn.response()
        assert (status, int(body)) == (200, size)
        assert peak - rss_before < 32 * 1024 * 1024, (rss_before, peak)
    finally:
        app.stop()
