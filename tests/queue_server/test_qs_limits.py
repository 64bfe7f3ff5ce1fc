"""The queue server's own HTTP limits (httpkit's ``ServerLimits`` as ``surge queue serve``
sets them): a huge head costs no memory, the largest valid request fits, one byte more
does not."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import psutil
from qs_support import ServerThread

from surge.queue.server.main import MAX_REQUEST_BYTES

sys.path.insert(0, str(Path(__file__).parents[1] / "queue_client"))
from servers import free_port, stop, wait_until_listening


def test_a_16_mb_header_is_refused_early_and_costs_no_memory(tmp_path: Path) -> None:
    """The reproduction: a 16 MB header to :9324 got 200 and grew memory by 16 MB."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", "from surge.cli import main; main()", "queue", "serve",
         "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path)],
        stderr=subprocess.DEVNULL)
    try:
        wait_until_listening(port, server, "surge queue serve")
        process = psutil.Process(server.pid)
        before = process.memory_info().rss
        sent = 0
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(b"GET /_surge/ping HTTP/1.1\r\nHost: x\r\nX-Big: ")
            try:
                while sent < 16 * 1024 * 1024:
                    client.sendall(b"a" * 65536)
                    sent += 65536
            except OSError:
                pass  # the server stopped reading: refused
            answer = client.recv(65536)
        growth = process.memory_info().rss - before
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        assert growth < 4 * 1024 * 1024, f"RSS grew by {growth} bytes"
    finally:
        stop(server)


def test_the_largest_batch_fits_and_one_byte_more_does_not(server: ServerThread) -> None:
    def post(body: bytes) -> int:
        request = urllib.request.Request(
            server.endpoint + "/", data=body, method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post(urlencode({"Action": "CreateQueue", "QueueName": "big",
                           "Attribute.1.Name": "MaximumMessageSize",
                           "Attribute.1.Value": "1048576"}).encode()) == 200
    # 1 MiB of two-byte characters: the query protocol sends each byte as %XX (3×).
    per_entry = (1024 * 1024 - 100) // 10 // 2
    entries: dict[str, str] = {"Action": "SendMessageBatch",
                               "QueueUrl": server.endpoint + "/000000000000/big"}
    for number in range(1, 11):
        prefix = f"SendMessageBatchRequestEntry.{number}."
        entries[prefix + "Id"] = f"e{number}"
        entries[prefix + "MessageBody"] = "é" * per_entry
    body = urlencode(entries).encode()
    assert 3 * 1024 * 1024 < len(body) < MAX_REQUEST_BYTES
    started = time.monotonic()
    assert post(body) == 200
    assert time.monotonic() - started < 10
    assert post(b"x" * (MAX_REQUEST_BYTES + 1)) == 413
