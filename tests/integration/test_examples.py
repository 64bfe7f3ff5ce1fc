"""Both examples, for real, through ``surge up``: each test starts it as a subprocess on free
ports with a temporary data directory and stops it with SIGTERM at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import psutil
import pytest

from integration.examples_flow import check_pages, check_task
from integration.surge_up import EXAMPLES, SurgeUp, free_port, http, wait_for


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


@pytest.mark.parametrize("example", ["python-app", "perl-legacy"])
def test_one_app_worker_crash_leaves_the_instance_serving(example, tmp_path):
    """kill -9 of one worker of an instance started with the example's own command: granian
    (with --respawn-failed-workers) and Starman start a new one while the others serve."""
    pool = tomllib.loads((EXAMPLES / example / "surge.toml").read_text())["pools"]["web"]
    port = free_port()
    argv = pool["command"].format(port=port, workers=2).split()
    # As surge up runs it: the virtualenv's bin (granian) first on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    app_server = subprocess.Popen(argv, cwd=EXAMPLES / example, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True,
                                  env={**os.environ, "PATH": path})
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for("the app server", lambda: http("GET", url, timeout=2)[0] == 200, 30)
        main = psutil.Process(app_server.pid)
        workers = wait_for("two workers", lambda: len(main.children()) == 2 and main.children(),
                           15)
        workers[0].kill()
        # SIGKILL lands asynchronously: a worker still blocked in accept() can take one more
        # connection and reset it. Behind surge that reset is retried (nothing was received);
        # here, against the app server alone, wait until the worker is gone.
        workers[0].wait(timeout=10)
        statuses = [http("GET", url, timeout=5)[0] for _ in range(40)]
        assert statuses == [200] * 40
        assert app_server.poll() is None, "the whole app server went down with one worker"
        wait_for("a replacement worker", lambda: len(main.children()) == 2
                 and workers[0].pid not in [c.pid for c in main.children()], 15)
        assert http("GET", url)[0] == 200
    finally:
        app_server.terminate()
        try:
            app_server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            app_server.kill()
            app_server.wait()
