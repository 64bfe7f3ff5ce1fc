"""What ``surge profile NAME`` profiles, from a ``/v1/state`` document and the profile
directories on disk (pure)."""

from __future__ import annotations

import pytest

from surge.profiling import ProfileError
from surge.profiling.targets import PerlProfile, PythonProcess, resolve, resolve_on_disk

STATE = {
    "processes": [
        {"name": "queue", "kind": "queue", "group": "queue", "pid": 11, "state": "running"},
        {"name": "web-1", "kind": "pool", "group": "web", "pid": 12, "state": "running"},
        {"name": "api-1", "kind": "pool", "group": "api", "pid": 13, "state": "running"},
        {"name": "gateway-1", "kind": "gateway", "group": "gateway", "pid": 14,
         "state": "running"},
        {"name": "gateway-2", "kind": "gateway", "group": "gateway", "pid": None,
         "state": "backoff"},
        {"name": "worker-images-1", "kind": "worker", "group": "images", "pid": 15,
         "state": "running"},
    ],
    "pools": {"web": {"profile": "nytprof"}, "api": {"profile": None}},
    "workers": {"images": {"profiles": {"process_image": "nytprof"}}},
}


@pytest.mark.parametrize("name, kind, pid", [
    ("gateway-1", "gateway", 14), ("queue", "queue", 11), ("worker-images-1", "worker", 15),
    ("api-1", "pool", 13),  # a pool without profile: py-spy (a Python app server)
])
def test_running_processes_are_sampled(name, kind, pid):
    assert resolve(name, STATE, set()) == PythonProcess(name, pid, kind)


def test_profiled_pools_and_tasks_are_rendered():
    assert resolve("web", STATE, set()) == PerlProfile("web", "pool web", "web")
    assert resolve("web-1", STATE, set()) == PerlProfile("web", "pool web", "web-1")
    assert resolve("process_image", STATE, set()) == PerlProfile(
        "process_image", "task process_image (worker group images)", "process_image")


def test_profiles_on_disk_need_no_state():
    """surge up may be stopped: that is when a persistent handler has written its profile."""
    assert resolve_on_disk("process_image", {"process_image"}) == \
        PerlProfile("process_image", "process_image", "process_image")
    assert resolve_on_disk("web-2", {"web"}) == PerlProfile("web", "pool web", "web-2")
    assert resolve_on_disk("gateway-1", {"web"}) is None
    assert resolve_on_disk("web-x", {"web"}) is None


def test_a_process_that_is_not_running_says_so():
    with pytest.raises(ProfileError, match=r"gateway-2 is not running \(state backoff\)"):
        resolve("gateway-2", STATE, set())


def test_an_unknown_name_lists_the_known_ones_and_the_closest():
    with pytest.raises(ProfileError) as caught:
        resolve("gatway-1", STATE, {"old_task"})
    message = str(caught.value)
    assert message.startswith("no process or profile named 'gatway-1'. Did you mean gateway-1")
    assert message.endswith("Known: api-1, gateway-1, gateway-2, old_task, process_image, "
                            "queue, web, web-1, worker-images-1")
