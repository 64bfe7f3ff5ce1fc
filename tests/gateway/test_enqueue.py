"""The enqueue route behind the real HTTP protocol (``HttpConnection`` on a transport in
memory), with an in-memory queue and result store: what a 202, 503 and 504 promise, the
JSON media type, nesting limits, Idempotency-Key, a failing or full result store, and a
Hypothesis fuzz over the body and headers that never gets a 5xx."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import enqueue_tasks
import orjson
import pytest
from gateway_support import MockTransport
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from surge.config.loader import validate_settings
from surge.config.settings import AccessLogSettings, EnqueueRoute
from surge.envelope import MAX_PAYLOAD_DEPTH
from surge.errors import QueueError, QueueNotReached, QueueUnavailable, ResultStoreError
from surge.gateway.http.accesslog import AccessLog
from surge.gateway.http.limits import Limits
from surge.gateway.http.protocol import HttpConnection
from surge.gateway.http.server import GatewayServer
from surge.gateway.routes import enqueue
from surge.gateway.routes.enqueue import EnqueueHandler, MessageSender, QueuedRecorder
from surge.gateway.routes.router import RouteEntry, Router
from surge.gateway.routes.tasks import TASKS_PREFIX, TaskStatusHandler
from surge.httpkit.media import json_media_type_problem
from surge.queue.client.memory import MemoryQueueClient
from surge.queue.interface import OutgoingMessage, SendResult
from surge.results.interface import ResultStore
from surge.results.memory import MemoryResultStore
from surge.results.sqlite import SqliteResultStore
from surge.worker.runtime import WorkerRuntime

HERE = Path(__file__).parent
JSON = [("Content-Type", "application/json")]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def parse_reply(data: bytes) -> Reply | None:
    head, separator, rest = data.partition(b"\r\n\r\n")
    if not separator:
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers.get("content-length", "0"))
    if len(rest) < length:
        return None
    return Reply(int(lines[0].split(" ")[1]), headers, rest[:length])


class Gateway:
    """One gateway process's worth of routes over a queue and a result store in memory."""

    def __init__(self, store: ResultStore | None, sender: MessageSender | None = None,
                 tasks: tuple[str, ...] = ("count",)) -> None:
        self.client = MemoryQueueClient()
        self.store = store
        self.recorder = QueuedRecorder(store)
        entries = [RouteEntry(f"/{task}", frozenset({"POST"}), EnqueueHandler(
            EnqueueRoute(queue="jobs", task=task), sender or self.client, self.recorder))
            for task in tasks]
        entries.append(RouteEntry(TASKS_PREFIX, frozenset({"GET"}), TaskStatusHandler(store)))
        self.server = GatewayServer(Limits(), Router(entries),
                                    AccessLog(AccessLogSettings(enabled=False)))

    async def start(self) -> Gateway:
        await self.client.create_queue("jobs")
        return self

    async def exchange(self, raw: bytes) -> Reply:
        connection = HttpConnection(self.server)
        transport = MockTransport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        connection.data_received(raw)
        try:
            async with asyncio.timeout(10):
                while (reply := parse_reply(b"".join(transport.written))) is None:
                    await asyncio.sleep(0.001)
        finally:
            connection.connection_lost(None)
        return reply

    async def post(self, body: bytes, headers: list[tuple[str, str]] | None = None,
                   path: str = "/count") -> Reply:
        lines = "".join(f"{name}: {value}\r\n" for name, value in
                        (JSON if headers is None else headers))
        return await self.exchange(
            f"POST {path} HTTP/1.1\r\nHost: x\r\n{lines}Content-Length: {len(body)}\r\n\r\n"
            .encode("latin-1") + body)

    async def messages(self) -> list[dict[str, Any]]:
        """Every message in the queue now (made visible again for the next look)."""
        received = await self.client.receive("jobs", 10, 0, 0)
        return [orjson.loads(message.body) for message in received]

    async def queued_count(self) -> int:
        attributes = await self.client.get_attributes("jobs", ["ApproximateNumberOfMessages"])
        return int(attributes["ApproximateNumberOfMessages"])


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# 202: the task and its status are both stored


def test_202_means_the_message_and_the_queued_record_are_stored() -> None:
    async def scenario() -> None:
        gateway = await Gateway(MemoryResultStore()).start()
        reply = await gateway.post(b'{"width": 300}')
        assert reply.status == 202, reply
        task_id = reply.json()["id"]
        assert reply.json() == {"id": task_id, "status": "queued"}
        assert reply.headers["location"] == f"/tasks/{task_id}"
        assert "idempotent-replayed" not in reply.headers
        [message] = await gateway.messages()
        assert (message["id"], message["task"], message["payload"]) == (
            task_id, "count", {"width": 300})
        assert message["send_id"] and message["timestamp"] > 0
        record = await gateway.store.get(task_id)  # type: ignore[union-attr]
        assert record is not None and record.status == "queued"

    run(scenario)


class FailingStore(MemoryResultStore):
    """A result store whose writes fail (``error``) or never finish (``hang``)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    async def _fail(self) -> None:
        if self.mode == "hang":
            await asyncio.sleep(3600)
        raise ResultStoreError("database or disk is full")

    async def mark_queued(self, records: list[tuple[str, str]]) -> None:
        await self._fail()

    async def bind_key(self, *args: Any, **kwargs: Any) -> Any:
        await self._fail()


@pytest.mark.parametrize("mode", ["error", "hang"])
@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "idempotency-key"])
def test_a_status_that_cannot_be_stored_means_503_and_nothing_sent(
        mode: str, keyed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: with the disk full the old route answered 202 (the message was sent first)
    while GET /tasks/<id> said 404. Now the record is written first, and its failure is a 503
    with nothing in the queue."""
    monkeypatch.setattr(enqueue, "RECORD_DEADLINE", 0.2)

    async def scenario() -> None:
        gateway = await Gateway(FailingStore(mode)).start()
        gateway.recorder.deadline = 0.2
        headers = [*JSON, ("Idempotency-Key", "k1")] if keyed else JSON
        reply = await gateway.post(b'{"n": 1}', headers)
        assert reply.status == 503 and int(reply.headers["retry-after"]) > 0
        assert await gateway.queued_count() == 0

    run(scenario)


def test_no_result_store_means_503() -> None:
    async def scenario() -> None:
        gateway = await Gateway(None).start()
        for headers in (JSON, [*JSON, ("Idempotency-Key", "k")]):
            assert (await gateway.post(b"{}", headers)).status == 503
        assert await gateway.queued_count() == 0

    run(scenario)


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (needs root; the caller skips otherwise)."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.mark.skipif(not can_mount(), reason="mounting a small tmpfs needs root")
def test_a_full_disk_means_503_until_space_is_back(tmp_path: Path) -> None:
    """A real full disk under the SQLite result store: 503 and nothing queued, then 202s
    (with their records) once space is freed."""
    with small_filesystem(tmp_path / "small", "400k") as disk:
        async def scenario() -> None:
            store = SqliteResultStore(disk / "results.db", 3600)
            gateway = await Gateway(store).start()
            try:
                assert (await gateway.post(b'{"before": 1}')).status == 202
                filler = disk / "filler"
                with contextlib.suppress(OSError), filler.open("wb") as fill:
                    while True:
                        fill.write(b"x" * 4096)
                        fill.flush()
                statuses = [(await gateway.post(orjson.dumps({"n": i, "pad": "p" * 2000}))).status
                            for i in range(40)]
                assert set(statuses) == {503}, statuses
                assert await gateway.queued_count() == 1
                filler.unlink()
                reply = await gateway.post(b'{"after": 1}')
                assert reply.status == 202
                assert await store.get(reply.json()["id"]) is not None
            finally:
                await store.close()

        run(scenario)


# what the queue's answers become


class ScriptedSender:
    """Sends through the memory queue, then answers as told: ``lost`` stores the message
    and raises as if the answer was lost; the others raise without storing."""

    def __init__(self, client: MemoryQueueClient) -> None:
        self.client = client
        self.outcomes: list[str] = []

    async def send(self, queue: str, message: OutgoingMessage) -> SendResult:
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if outcome in ("ok", "lost"):
            result = await self.client.send(queue, message)
            if outcome == "ok":
                return result
            raise QueueUnavailable("SendMessageBatch: connection closed before the response")
        if outcome == "unreached":
            raise QueueNotReached("cannot connect to 127.0.0.1:9324: connection refused")
        if outcome == "timeout":
            raise TimeoutError("the queue did not acknowledge within 5s")
        raise QueueError(outcome, "refused")


@pytest.mark.parametrize(("outcome", "status"), [
    ("unreached", 503), ("QueueDoesNotExist", 503), ("lost", 504), ("timeout", 504),
    ("MessageTooLong", 413), ("InvalidMessageContents", 400)])
def test_each_queue_outcome_has_its_status(outcome: str, status: int) -> None:
    async def scenario() -> None:
        gateway = Gateway(MemoryResultStore())
        sender = ScriptedSender(gateway.client)
        gateway = Gateway(gateway.store, sender)
        sender.client = gateway.client
        await gateway.start()
        sender.outcomes = [outcome]
        reply = await gateway.post(b'{"n": 1}')
        assert reply.status == status, reply
        if status in (503, 504):
            assert int(reply.headers["retry-after"]) > 0

    run(scenario)


def test_a_lost_answer_retried_with_the_same_key_runs_the_task_once() -> None:
    """The issue's run: the queue stored the message but its answer was lost (the server was
    killed mid-burst). The client got 504, not "not stored"; its retry with the same key gets
    the same task, sent again; the workers run it once and take both copies off the queue."""
    enqueue_tasks.runs.clear()

    async def scenario() -> None:
        store = MemoryResultStore()
        client = MemoryQueueClient()
        sender = ScriptedSender(client)
        gateway = Gateway(store, sender)
        gateway.client = client
        await gateway.start()
        sender.outcomes = ["lost", "ok"]
        headers = [*JSON, ("Idempotency-Key", "order-42")]
        first = await gateway.post(b'{"order": 42}', headers)
        assert first.status == 504
        second = await gateway.post(b'{"order": 42}', headers)
        assert second.status == 202 and second.headers["idempotent-replayed"] == "true"
        task_id = second.json()["id"]
        copies = await gateway.messages()
        assert [copy["id"] for copy in copies] == [task_id, task_id]
        assert copies[0]["send_id"] != copies[1]["send_id"]
        third = await gateway.post(b'{"order": 42}', headers)  # confirmed now: not sent again
        assert (third.status, third.json()["id"]) == (202, task_id)
        assert await gateway.queued_count() == 2

        settings = validate_settings({
            "config_dir": str(HERE), "queues": {"jobs": {}},
            "workers": {"jobs": {"queue": "jobs", "python_path": ["."], "wait_time": 0.1,
                                 "concurrency": 4,
                                 "handlers": {"count": "enqueue_tasks:count"}}}})
        runtime = WorkerRuntime(settings, "jobs", client, store)
        running = asyncio.create_task(runtime.run())
        try:
            async with asyncio.timeout(10):
                while await gateway.queued_count() or runtime.stats.duplicates < 1 \
                        or runtime.stats.processed < 1:
                    await asyncio.sleep(0.02)
        finally:
            runtime.stop()
            await running
        assert enqueue_tasks.runs == {"{'order': 42}": 1}
        record = await store.get(task_id)
        assert record is not None and record.status == "succeeded"
        assert [change.status for change in record.history] == ["queued", "running",
                                                                  "succeeded"]
        attributes = await client.get_attributes(
            "jobs", ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
        assert attributes == {"ApproximateNumberOfMessages": "0",
                              "ApproximateNumberOfMessagesNotVisible": "0"}
        replay = await gateway.post(b'{"order": 42}', headers)
        assert replay.status == 202 and replay.json() == {"id": task_id, "status": "succeeded"}

    run(scenario)


# Idempotency-Key


def test_the_same_key_gives_the_same_task_and_a_new_key_a_new_one() -> None:
    async def scenario() -> None:
        gateway = await Gateway(MemoryResultStore(), tasks=("count", "other")).start()
        first = await gateway.post(b'{"a": 1}', [*JSON, ("Idempotency-Key", "k-1")])
        again = await gateway.post(b'{"a": 1}', [*JSON, ("Idempotency-Key", '"k-1"')])
        assert first.status == again.status == 202
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["location"] == first.headers["location"]
        assert again.headers["idempotent-replayed"] == "true"
        assert await gateway.queued_count() == 1  # the first send was confirmed
        other = await gateway.post(b'{"a": 1}', [*JSON, ("Idempotency-Key", "k-2")])
        elsewhere = await gateway.post(b'{"a": 1}', [*JSON, ("Idempotency-Key", "k-1")],
                                       path="/other")  # keys are per route's task
        assert len({first.json()["id"], other.json()["id"], elsewhere.json()["id"]}) == 3
        reused = await gateway.post(b'{"a": 2}', [*JSON, ("Idempotency-Key", "k-1")])
        assert reused.status == 422 and b"different request body" in reused.body
        assert await gateway.queued_count() == 3

    run(scenario)


@pytest.mark.parametrize("headers", [
    [("Idempotency-Key", "")], [("Idempotency-Key", "x" * 256)],
    [("Idempotency-Key", "has space")], [("Idempotency-Key", "caf\u00e9")],
    [("Idempotency-Key", '"unterminated')], [("Idempotency-Key", "a\\b")],
    [("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
], ids=["empty", "256-long", "space", "non-ascii", "quote", "backslash", "two"])
def test_a_bad_key_is_a_precise_400(headers: list[tuple[str, str]]) -> None:
    async def scenario() -> None:
        gateway = await Gateway(MemoryResultStore()).start()
        reply = await gateway.post(b"{}", [*JSON, *headers])
        assert reply.status == 400 and b"Idempotency-Key" in reply.body
        assert await gateway.queued_count() == 0

    run(scenario)


def test_the_longest_key_is_accepted() -> None:
    async def scenario() -> None:
        gateway = await Gateway(MemoryResultStore()).start()
        assert (await gateway.post(b"{}", [*JSON, ("Idempotency-Key", "k" * 255)])).status \
            == 202

    run(scenario)


# media type (no cross-site form can enqueue) and nesting


@pytest.mark.parametrize("value", [
    "application/json", "APPLICATION/JSON", "application/json; charset=utf-8",
    'application/json;charset="UTF-8"', "application/vnd.api+json",
    "application/problem+json ; foo=bar", "application/json;",
])
def test_json_media_types_are_accepted(value: str) -> None:
    assert json_media_type_problem(value) is None


@pytest.mark.parametrize("value", [
    None, "", "text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/json; charset=latin-1",
    "application/jsonx", "application/+json", "json", "application/json garbage",
    "application/json; charset", "text/json",
])
def test_other_media_types_are_refused(value: str | None) -> None:
    assert json_media_type_problem(value) is not None


def test_enqueue_needs_a_json_content_type() -> None:
    """Issue 11: text/plain JSON got 202, so a form on any web site could enqueue tasks."""
    async def scenario() -> None:
        gateway = await Gateway(MemoryResultStore()).start()
        for headers in ([("Content-Type", "text/plain")], [],
                        [("Content-Type", "application/x-www-form-urlencoded")]):
            reply = await gateway.post(b'{"a": 1}', headers)
            assert reply.status == 415, (headers, reply)
        both = await gateway.post(b"{}", [*JSON, ("Content-Type", "application/json")])
        assert both.status == 400
        assert await gateway.queued_count() == 0

    run(scenario)


@pytest.mark.parametrize("depth", [1, 100, MAX_PAYLOAD_DEPTH])
def test_nesting_up_to_the_limit_is_accepted(depth: int) -> None:
    async def scenario() -> None:
        gateway = await Gateway(MemoryResultStore()).start()
        assert (await gateway.post(nested(depth))).status == 202

    run(scenario)


@pytest.mark.parametrize("depth", [MAX_PAYLOAD_DEPTH + 1, 500, 1024, 1025, 100_000])
def test_deeper_nesting_is_a_400_that_names_the_limit(depth: int) -> None:
    """Issue 11: 254–1024 levels got a 500 (orjson's writer stops at 254)."""
    async def scenario() -> None:
        gateway = await Gateway(MemoryResultStore()).start()
        reply = await gateway.post(nested(depth))
        assert reply.status == 400, reply
        assert f"nested deeper than {MAX_PAYLOAD_DEPTH} levels".encode() in reply.body
        assert await gateway.queued_count() == 0

    run(scenario)


# fuzz: no input gets a 5xx, and a 202 is always stored


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                           allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
# The standard library writes what orjson refuses: integers past 64 bits, lone surrogates.
json_documents = json_values.map(lambda value: json.dumps(value).encode())
bodies = st.one_of(
    json_documents,
    st.binary(max_size=300),
    st.integers(0, 1500).map(nested),
    st.integers(0, 1500).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.tuples(json_documents, st.integers(0, 50)).map(
        lambda pair: pair[0][:pair[1]]),  # cut short
    st.sampled_from([b'"\\ud800"', b"1e400", b"18446744073709551616", b"\xef\xbb\xbf{}",
                     b"NaN", b"[1,]", b"{'a': 1}", b" ", b"\x00"]),
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                    blacklist_characters="\x7f"), max_size=300)
content_types = st.one_of(
    st.just("application/json"),
    st.sampled_from(["application/vnd.x+json; charset=utf-8", 'application/json;charset="UTF-8"',
                     "application/json ; a=b"]),
    st.sampled_from(["text/plain", "application/json; charset=utf-16", ""]),
    header_text,
    st.none(),
)
keys = st.one_of(st.none(), st.sampled_from(["k", '"k"', "k" * 255, "k" * 256]),
                 st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                         max_size=20),
                 header_text)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=bodies, content_type=content_types, key=keys)
def test_fuzz_no_5xx_and_every_202_is_stored(body: bytes, content_type: str | None,
                                             key: str | None) -> None:
    headers = [] if content_type is None else [("Content-Type", content_type)]
    if key is not None:
        headers.append(("Idempotency-Key", key))

    async def scenario() -> None:
        gateway = await Gateway(MemoryResultStore()).start()
        reply = await gateway.post(body, headers)
        event(f"status {reply.status}")  # --hypothesis-show-statistics: how often each
        assert reply.status < 500, (reply, body[:100], headers)
        stored = await gateway.queued_count()
        if reply.status == 202:
            task_id = reply.json()["id"]
            assert stored == 1
            assert [m["id"] for m in await gateway.messages()] == [task_id]
            assert await gateway.store.get(task_id) is not None  # type: ignore[union-attr]
        else:
            assert reply.status in (400, 413, 415), reply
            assert stored == 0

    run(scenario)



@settings(max_examples=100, deadline=None)
@given(task_id=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80))
def test_fuzz_task_status_is_200_or_404(task_id: str) -> None:
    async def scenario() -> None:
        gateway = await Gateway(MemoryResultStore()).start()
        accepted = await gateway.post(b'{"n": 1}')
        reply = await gateway.exchange(f"GET /tasks/{task_id} HTTP/1.1\r\nHost: x\r\n\r\n"
                                       .encode())
        event(f"status {reply.status}")
        assert reply.status in (200, 400, 404), reply
        known = await gateway.exchange(f"GET {accepted.headers['location']} HTTP/1.1\r\n"
                                       "Host: x\r\n\r\n".encode())
        assert known.status == 200 and known.json()["history"][0]["status"] == "queued"

    run(scenario)
