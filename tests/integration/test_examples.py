"""Both examples, for real, through ``surge up``: each test starts it as a subprocess on free
ports with a temporary data directory and stops it with SIGTERM at the end."""

from __future__ import annotations

import shutil
import time

import pytest

from integration.examples_flow import check_pages, check_task
from integration.surge_up import EXAMPLES, SurgeUp, wait_for


@pytest.fixture
def python_example(tmp_path):
    up = SurgeUp(tmp_path, None).start()  # no -c: the embedded default
    try:
        up.wait_until_up(timeout=90)
        yield up
    finally:
        up.close()


@pytest.fixture
def perl_example(tmp_path):
    assert shutil.which("starman"), "starman is not installed (apt-get install starman)"
    up = SurgeUp(tmp_path, EXAMPLES / "perl-legacy" / "surge.toml").start()
    try:
        up.wait_until_up(timeout=90)
        yield up
    finally:
        up.close()


def stop_cleanly(up: SurgeUp) -> None:
    started = time.monotonic()
    assert up.terminate(timeout=60) == 0, up.log_tail()
    # The drain deadline: supervisor.shutdown_timeout (40 s by default).
    assert time.monotonic() - started < 40
    assert up.survivors() == [], [p.cmdline() for p in up.survivors()]


def test_python_example(python_example):
    check_pages(python_example, "surge Python example")
    check_task(python_example)
    check_worker_scaling(python_example)
    stop_cleanly(python_example)


def check_worker_scaling(up: SurgeUp) -> None:
    queues = up.state()["queues"]
    assert isinstance(queues["images"]["ApproximateNumberOfMessages"], int), queues
    assert "images-dlq" in queues
    status, answer = up.admin_call("POST", "/v1/workers/images/scale", {"processes": 0.5})
    assert status == 400 and "must be an integer" in answer["error"]
    status, _ = up.admin_call("POST", "/v1/workers/images/scale", {"processes": 2})
    assert status == 200
    wait_for("two worker processes", lambda: up.state()["workers"]["images"]["running"] == 2, 30)
    check_task(up)


def test_perl_example(perl_example):
    check_pages(perl_example, "surge Perl example")
    check_task(perl_example)
    stop_cleanly(perl_example)
