"""``surge up`` with a worker group under a backlog policy: a burst of slow tasks grows the
group (ceil(visible ÷ 5), up to max), and it shrinks back to min once the queue is drained."""

from __future__ import annotations

import json

from integration.surge_up import SurgeUp, http, wait_for, write_config

TASKS = 60

CONFIG = """
data_dir = "data"
[gateway]
processes = 1
[gateway.access_log]
enabled = false
[queues.jobs]
visibility_timeout = "30s"
[workers.jobs]
queue = "jobs"
concurrency = 1
wait_time = "1s"
python_path = ["."]
handlers = { slow = "slow_tasks:slow" }
instances = { min = 1, max = 4, desired = 1 }
shutdown_timeout = "5s"
[workers.jobs.scaling]
backlog_per_worker = 5
period = "1s"
evaluation_periods = 2
scale_in_evaluation_periods = 3
instance_warmup = "1s"
scale_out_cooldown = "0s"
scale_in_cooldown = "2s"
[[routes]]
prefix = "/jobs"
methods = ["POST"]
enqueue = { queue = "jobs", task = "slow" }
"""

HANDLER = """
import time


def slow(payload):
    time.sleep(0.3)  # about 3 tasks a second per single-slot worker
    return {"n": payload["n"]}
"""


def test_a_burst_of_tasks_grows_the_worker_group_and_it_shrinks_when_drained(tmp_path):
    (tmp_path / "slow_tasks.py").write_text(HANDLER)
    up = SurgeUp(tmp_path, write_config(tmp_path / "surge.toml", CONFIG)).start()
    try:
        wait_for("the enqueue route", lambda: enqueue(up, -1) == 202 or up.check_alive(), 30,
                 interval=0.25)
        up.remember_descendants()
        assert workers(up)["desired"] == 1
        assert all(enqueue(up, n) == 202 for n in range(TASKS))
        # 61 visible over one worker: ceil(61 / 5) = 13, held at max 4.
        wait_for("scale-out to 4 workers", lambda: workers(up)["running"] == 4, 20)
        first = activity(up)[-1]
        assert (first["kind"], first["group"], first["direction"], first["policy"]) == \
            ("worker", "jobs", "out", "backlog_per_worker")
        assert (first["from_desired"], first["to_desired"]) == (1, 4)
        up.remember_descendants()
        wait_for("the queue drained", lambda: backlog(up) == (0, 0), 30, interval=0.25)
        wait_for("scale-in back to 1 worker", lambda: workers(up)["desired"] == 1, 15)
        last = activity(up)[0]
        assert (last["direction"], last["to_desired"], last["value"]) == ("in", 1, 0)
        wait_for("surplus workers stopped", lambda: workers(up)["running"] == 1, 15)
        assert dead_letters(up) == 0
        assert up.terminate(timeout=60) == 0
        assert up.survivors() == []
    finally:
        up.close()


def enqueue(up: SurgeUp, n: int) -> int:
    status, _, _ = http("POST", f"{up.gateway}/jobs", json.dumps({"n": n}).encode(),
                        headers={"Content-Type": "application/json"})
    return status


def workers(up: SurgeUp) -> dict:
    return up.state()["workers"]["jobs"]


def activity(up: SurgeUp) -> list[dict]:
    return up.state()["scaling_activity"]


def backlog(up: SurgeUp) -> tuple[int, int]:
    queue = up.state()["queues"]["jobs"]
    return queue["ApproximateNumberOfMessages"], queue["ApproximateNumberOfMessagesNotVisible"]


def dead_letters(up: SurgeUp) -> int:
    return int(up.state()["queues"]["jobs-dlq"]["ApproximateNumberOfMessages"])
