"""The supervisor's autoscaler against a stand-in supervisor: readings from children,
warmup, decisions applied through ``resize``, activity recorded, state and status shown."""

import asyncio
import io
from types import SimpleNamespace

from rich.console import Console

from surge.config.loader import validate_settings
from surge.supervisor.autoscaler import Autoscaler
from surge.supervisor.logs import LogSink
from surge.supervisor.policy import ChildState, Kind
from surge.supervisor.readings import group_members
from surge.supervisor.status import render

SETTINGS = {
    "queues": {"jobs": {}},
    "pools": {"web": {"command": "app {port}", "instances": {"min": 1, "max": 4, "desired": 1},
                      "scaling": {"requests_per_target": 600, "period": "1s",
                                  "evaluation_periods": 2, "scale_in_evaluation_periods": 2,
                                  "instance_warmup": "5s", "scale_in_cooldown": "0s",
                                  "scale_out_cooldown": "0s"}}},
    "workers": {"jobs": {"queue": "jobs", "handlers": {},
                         "instances": {"min": 0, "max": 3, "desired": 0},
                         "scaling": {"backlog_per_worker": 5, "period": "1s",
                                     "evaluation_periods": 1}}},
}


def child(name, kind, group, state=ChildState.RUNNING, ready_since=0.0, address=None):
    return SimpleNamespace(name=name, kind=kind, group=group, state=state, retiring=False,
                           ready_since=ready_since, process=None,
                           spec=SimpleNamespace(address=address))


class FakeQueues:
    def __init__(self, visible):
        self.visible = visible

    async def client(self):
        return self

    async def get_attributes(self, queue, names):
        return {"ApproximateNumberOfMessages": str(self.visible)}


class FakeSupervisor:
    def __init__(self, visible=0):
        self.settings = validate_settings(SETTINGS)
        self.log = LogSink(io.BytesIO())
        self.children = {"web-1": child("web-1", Kind.POOL, "web", address="127.0.0.1:5001")}
        self.desired = {(Kind.POOL, "web"): 1, (Kind.WORKER, "jobs"): 0}
        self.queues = FakeQueues(visible)
        self.stopping = False
        self.resized = []

    def resize(self, kind, group, desired):
        self.resized.append((kind, group, desired))
        self.desired[(kind, group)] = desired


def access_lines(log, target, count):
    log.child_lines("gateway-1", "stdout", [f'{{"target":"{target}"}}'] * count)


def test_group_members_split_by_warmup():
    children = [child("web-1", Kind.POOL, "web", ready_since=0.0),
                child("web-2", Kind.POOL, "web", ready_since=8.0),
                child("web-3", Kind.POOL, "web", state=ChildState.STARTING, ready_since=None),
                child("web-4", Kind.POOL, "web", state=ChildState.BACKOFF, ready_since=None),
                child("worker-x-1", Kind.WORKER, "x")]
    members = group_members(children, Kind.POOL, "web", warmup=5.0, now=10.0)
    assert [c.name for c in members.in_service] == ["web-1"]
    assert [c.name for c in members.warming] == ["web-2", "web-3"]


def test_requests_per_target_scales_a_pool_out_and_records_why():
    supervisor = FakeSupervisor()
    autoscaler = Autoscaler(supervisor)

    async def scenario():
        await autoscaler.evaluate_due(100.0)  # registers the group; first evaluation at 101
        await autoscaler.evaluate_due(101.0)  # first snapshot of the counts: no datapoint
        for now in (102.0, 103.0):
            access_lines(supervisor.log, "127.0.0.1:5001", 25)  # 25 per s = 1500 per min
            await autoscaler.evaluate_due(now)

    asyncio.run(scenario())
    # ceil(1 × 1500 / 600) = 3, after two datapoints over target.
    assert supervisor.resized == [(Kind.POOL, "web", 3)]
    activity = autoscaler.history.newest_first()[0]
    assert activity["cause"] == "requests_per_target 1500 > target 600: desired 1 → 3"
    described = autoscaler.describe(Kind.POOL, "web")
    assert described["policies"]["requests_per_target"] == {"target": 600.0, "value": 1500.0}


def test_backlog_grows_an_empty_worker_group():
    supervisor = FakeSupervisor(visible=12)
    autoscaler = Autoscaler(supervisor)

    async def scenario():
        await autoscaler.evaluate_due(100.0)
        await autoscaler.evaluate_due(101.0)

    asyncio.run(scenario())
    assert (Kind.WORKER, "jobs", 3) in supervisor.resized  # ceil(12 / 5) = 3 (the max)


def test_status_shows_policies_and_activity():
    state = {
        "processes": [], "queues": {},
        "pools": {"web": {"desired": 3, "min": 1, "max": 4, "targets": [],
                          "scaling": {"policies": {"cpu": {"target": 70.0, "value": 91.5}}}}},
        "workers": {},
        "scaling_activity": [{"time": 0.0, "kind": "pool", "group": "web", "direction": "out",
                              "policy": "cpu", "value": 91.5, "target": 70.0,
                              "from_desired": 1, "to_desired": 3}],
    }
    output = io.StringIO()
    Console(file=output, width=160, color_system=None).print(render(state, {}))
    text = output.getvalue()
    for expected in ("Scaling policies", "Scaling activity", "pool web", "91.5", "1 → 3",
                     "cpu 91.5 > target 70"):
        assert expected in text
