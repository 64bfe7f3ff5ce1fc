"""The example handlers: Python ``tasks.process_image`` and the Perl ``process_image.pl`` in
both command modes, through a whole worker (memory queue). Perl and JSON::XS are required:
their absence fails these tests."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from worker_fakes import (
    MemoryResultStore,
    create_queue_with_dlq,
    enqueue_many,
    make_settings,
    wait_until,
)

from surge.errors import HandlerError
from surge.queue.client.memory import MemoryQueueClient
from surge.worker.runtime import WorkerRuntime

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PERL_DIR = EXAMPLES / "perl-legacy"
PYTHON_DIR = EXAMPLES / "python-app"

PAYLOADS: list[Any] = [
    {"width": 300, "height": 200, "seed": 5},
    {"width": 10, "height": 1000},
    {"width": 4, "height": 1, "image": "AAECAw==", "thumbnail": 2},
    {"width": 1, "height": 1, "image": "/w=="},
]
BAD_PAYLOADS: list[Any] = [[1, 2], {"width": 0}, {"image": "!!notbase64", "width": 1},
                           {"width": 2, "height": 2, "image": "AAE="}]


def python_process_image() -> Any:
    sys.path.insert(0, str(PYTHON_DIR))
    try:
        import tasks

        return tasks.process_image
    finally:
        sys.path.remove(str(PYTHON_DIR))


def test_perl_and_json_xs_are_installed() -> None:
    assert shutil.which("perl"), "perl is required for the Perl example handler"
    check = subprocess.run(["perl", "-MJSON::XS", "-e", "1"], capture_output=True, text=True)
    assert check.returncode == 0, f"JSON::XS is required (libjson-xs-perl): {check.stderr}"


def test_python_example_result() -> None:
    process_image = python_process_image()
    result = process_image({"width": 300, "height": 200, "seed": 5})
    assert result["bytes"] == 60000
    assert result["thumbnail"] == {"width": 128, "height": 85}
    assert result["sha256"] == \
        "67c5c3f05f5f31fb043f736b99ab4677c863e98798082b0cd4122b1a78e1b439"
    for bad in BAD_PAYLOADS:
        with pytest.raises(HandlerError) as caught:
            process_image(bad)
        assert caught.value.permanent


def run_examples(handler: Any, config_dir: Path, python_path: list[str]) -> MemoryResultStore:
    async def scenario() -> MemoryResultStore:
        client, store = MemoryQueueClient(), MemoryResultStore()
        await create_queue_with_dlq(client, max_receive_count=5)
        items = [("process_image", p, f"good{i}") for i, p in enumerate(PAYLOADS)]
        items += [("process_image", p, f"bad{i}") for i, p in enumerate(BAD_PAYLOADS)]
        await enqueue_many(client, items)
        settings = make_settings({"handlers": {"process_image": handler}, "wait_time": 0.2,
                                  "python_path": python_path, "concurrency": 4},
                                 config_dir=str(config_dir))
        runtime = WorkerRuntime(settings, "jobs", client, store)
        running = asyncio.create_task(runtime.run())
        try:
            await wait_until(lambda: sum(r.status in ("succeeded", "dead")
                                         for r in store.records.values()) == len(items), 20)
        finally:
            runtime.stop()
            await running
        return store
    return asyncio.run(scenario())


@pytest.mark.parametrize("handler", [
    {"command": "perl process_image.pl", "mode": "per-task"},
    {"command": "perl process_image.pl --persistent", "mode": "persistent", "processes": 2},
    "tasks:process_image",
], ids=["perl-per-task", "perl-persistent", "python"])
def test_example_handler_through_a_worker(handler: Any) -> None:
    python = isinstance(handler, str)
    store = run_examples(handler, PYTHON_DIR if python else PERL_DIR, ["."] if python else [])
    process_image = python_process_image()
    for index, payload in enumerate(PAYLOADS):
        record = store.records[f"good{index}"]
        assert (record.status, record.result) == ("succeeded", process_image(payload))
    for index in range(len(BAD_PAYLOADS)):
        record = store.records[f"bad{index}"]
        assert record.status == "dead"
        assert record.attempts == 1  # permanent: never retried
        assert (record.error or "").startswith("permanent failure")
