"""SIGHUP planning: what applies live, what replaces processes, what needs a restart."""

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
    new = settings(**{"gateway.listen": "127.0.0.1:9999", "pools.web.workers": 8,
                      "queues.images.visibility_timeout": "60s"})
    old = settings()
    plan = plan_reload(old, new)
    assert "gateway.listen" in plan.needs_restart
    assert "queues" in plan.needs_restart
    assert any(key.startswith("pools.web") for key in plan.needs_restart)
    assert plan.applied.gateway.listen == old.gateway.listen
    assert plan.applied.pools["web"].workers == old.pools["web"].workers
    assert plan.applied.queues == old.queues
