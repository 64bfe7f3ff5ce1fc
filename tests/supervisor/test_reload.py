"""SIGHUP planning: what applies live, what replaces processes, what needs a restart."""

import pytest

from surge.config.loader import load_settings
from surge.supervisor.reload import plan_reload


def settings(**overrides):
    return load_settings(None, overrides)


def test_same_config_changes_nothing():
    plan = plan_reload(settings(), settings())
    assert (plan.resized, plan.needs_restart, plan.restart_worker_groups) == ([], [], [])
    assert not plan.restart_gateways


def test_pool_size_and_worker_count_apply_live():
    new = settings(**{"pools.web.instances": {"min": 1, "max": 4, "desired": 3},
                      "workers.images.processes": 2})
    plan = plan_reload(settings(), new)
    assert plan.applied.pools["web"].instances.desired == 3
    assert plan.applied.workers["images"].processes == 2
    assert any("desired 1 → 3" in line for line in plan.resized)
    assert plan.needs_restart == [] and plan.restart_worker_groups == []


def test_routes_change_replaces_gateways():
    new = settings(routes=[{"prefix": "/", "proxy": {"pool": "web"}}])
    plan = plan_reload(settings(), new)
    assert plan.restart_gateways
    assert len(plan.applied.routes) == 1


def test_worker_settings_change_replaces_that_group():
    plan = plan_reload(settings(), settings(**{"workers.images.concurrency": 2}))
    assert plan.restart_worker_groups == ["images"]
    assert plan.applied.workers["images"].concurrency == 2


def test_unsafe_changes_are_kept_and_reported():
    new = settings(**{"gateway.listen": "127.0.0.1:9999", "pools.web.targets": ["127.0.0.1:1"],
                      "queues.images.visibility_timeout": "60s"})
    old = settings()
    plan = plan_reload(old, new)
    assert plan.needs_restart == ["queues", "gateway.listen", "pools.web.targets"]
    assert plan.applied.gateway.listen == old.gateway.listen
    assert plan.applied.pools["web"].targets == []
    assert plan.applied.queues == old.queues


@pytest.mark.parametrize("change", [
    {"pools.web.workers": 8},
    {"pools.web.command": "granian --interface asgi --port {port} --workers {workers} app:app"},
    {"pools.web.env": {"APP_MODE": "new"}},
])
def test_launch_settings_refresh_the_pool(change):
    plan = plan_reload(settings(), settings(**change))
    assert plan.refresh_pools == ["web"]
    assert plan.needs_restart == []
    [(key, value)] = change.items()
    assert getattr(plan.applied.pools["web"], key.rsplit(".", 1)[1]) == value


def test_workers_also_reach_the_gateways_but_a_command_does_not():
    # The gateways limit each target to `workers` requests at once.
    assert plan_reload(settings(), settings(**{"pools.web.workers": 8})).restart_gateways
    command = "granian --interface asgi --port {port} --workers {workers} app:app"
    assert not plan_reload(settings(), settings(**{"pools.web.command": command})).restart_gateways


def test_proxy_settings_of_a_pool_replace_the_gateways_only():
    plan = plan_reload(settings(), settings(**{"pools.web.read_timeout": "5s"}))
    assert plan.restart_gateways and plan.refresh_pools == [] and plan.needs_restart == []
    assert plan.applied.pools["web"].read_timeout == 5.0
