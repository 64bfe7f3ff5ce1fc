"""The ``scaling`` tables: defaults, bounds, and errors that name the key and the value."""

import pytest

from surge.config.loader import validate_settings
from surge.errors import ConfigError

QUEUES = {"queues": {"jobs": {}}}


def pool(scaling, **extra):
    return {**QUEUES, "pools": {"web": {"command": "app --port {port}", "scaling": scaling,
                                        **extra}}}


def workers(**group):
    return {**QUEUES, "workers": {"jobs": {"queue": "jobs", "handlers": {}, **group}}}


def problems(raw):
    with pytest.raises(ConfigError) as error:
        validate_settings(raw)
    return "\n".join(error.value.problems)


def test_no_scaling_table_means_fixed_sizes():
    settings = validate_settings({**pool(None), **workers(processes=3)})
    assert settings.pools["web"].scaling is None
    assert settings.workers["jobs"].scaling is None
    count = settings.workers["jobs"].process_count()
    assert (count.min, count.desired, count.max) == (0, 3, 64)


def test_pool_policies_and_defaults():
    scaling = validate_settings(pool({"cpu": 70, "requests_per_target": 1000,
                                      "scale_in_cooldown": "5m"})).pools["web"].scaling
    assert scaling is not None
    assert scaling.policy_targets() == {"cpu": 70, "requests_per_target": 1000}
    assert (scaling.period, scaling.evaluation_periods, scaling.scale_in_evaluation_periods) \
        == (10, 3, 15)
    assert scaling.scale_in_cooldown == 300
    assert scaling.disable_scale_in is False


def test_worker_group_bounds_come_from_instances():
    group = validate_settings(workers(instances={"min": 0, "max": 8, "desired": 2},
                                      scaling={"backlog_per_worker": 5})).workers["jobs"]
    assert group.processes == 2  # a standalone `surge worker` still runs `desired` processes
    assert group.process_count().max == 8
    assert group.scaling is not None
    assert group.scaling.policy_targets() == {"backlog_per_worker": 5}


def test_gauge_policy():
    scaling = validate_settings(pool({"gauges": {"busy": {"target": 3,
                                     "url": "http://127.0.0.1:9100/metrics"}}})
                                ).pools["web"].scaling
    assert scaling is not None and scaling.policy_targets() == {"gauge:busy": 3}


@pytest.mark.parametrize(("scaling", "expected"), [
    ({"cpu": 170}, "pools.web.scaling.cpu: Input should be less than or equal to 100 (got 170)"),
    ({"cpu": 0}, "pools.web.scaling.cpu: Input should be greater than 0 (got 0)"),
    ({"requests_per_target": -5}, "pools.web.scaling.requests_per_target: Input should be "
                                  "greater than 0 (got -5)"),
    ({"cpu": 70, "backlog_per_worker": 5}, "pools.web.scaling.backlog_per_worker: unknown key"),
    ({"cpu": 70, "scale_in_cooldown": "soon"}, "pools.web.scaling.scale_in_cooldown: expected "
                                               "a duration"),
    ({"cpu": 70, "scale_in_margin": 1.5}, "pools.web.scaling.scale_in_margin: Input should be "
                                          "less than 1 (got 1.5)"),
    ({"cpu": 70, "evaluation_periods": 0}, "pools.web.scaling.evaluation_periods: Input should "
                                           "be greater than or equal to 1 (got 0)"),
    ({}, "pools.web.scaling: a scaling table needs at least one policy: cpu, "
         "requests_per_target or gauges"),
    ({"gauges": {"busy": {"target": 3, "url": "ftp://x"}}},
     "pools.web.scaling.gauges.busy.url: String should match pattern"),
])
def test_bad_pool_scaling_values_are_named(scaling, expected):
    assert expected in problems(pool(scaling))


def test_a_pool_of_fixed_targets_cannot_scale():
    raw = {"pools": {"ext": {"targets": ["10.0.0.1:80"], "scaling": {"cpu": 70}}}}
    assert "cannot autoscale" in problems(raw)


def test_requests_per_target_needs_the_access_log_on_stdout():
    raw = {**pool({"requests_per_target": 1000}),
           "gateway": {"access_log": {"path": "/var/log/surge.log"}}}
    assert "pools.web.scaling.requests_per_target: needs the gateway access log" in problems(raw)


@pytest.mark.parametrize(("group", "expected"), [
    ({"processes": 2, "instances": {"min": 1, "max": 4, "desired": 2}},
     "workers.jobs: set either 'processes' or 'instances'"),
    ({"processes": 2, "scaling": {"backlog_per_worker": 5}},
     "workers.jobs: a worker group with a 'scaling' table needs 'instances'"),
    ({"instances": {"min": 3, "max": 2, "desired": 2}},
     "workers.jobs.instances: need min <= desired <= max, got min=3 desired=2 max=2"),
    ({"instances": {"min": 0, "max": 4}, "scaling": {"requests_per_target": 10}},
     "workers.jobs.scaling.requests_per_target: unknown key"),
])
def test_bad_worker_scaling_is_named(group, expected):
    assert expected in problems(workers(**group))


def test_a_reload_applies_scaling_tables_and_worker_bounds_live():
    from surge.supervisor.reload import plan_reload

    old = validate_settings({**pool({"cpu": 70}),
                             **workers(instances={"min": 0, "max": 4, "desired": 1})})
    new = validate_settings({**pool({"cpu": 50, "disable_scale_in": True}),
                             **workers(instances={"min": 1, "max": 8, "desired": 2},
                                       scaling={"backlog_per_worker": 5})})
    plan = plan_reload(old, new)
    assert plan.needs_restart == []
    assert plan.restart_worker_groups == []
    assert plan.applied.pools["web"].scaling == new.pools["web"].scaling
    assert plan.applied.workers["jobs"].process_count().max == 8
    assert plan.applied.workers["jobs"].scaling == new.workers["jobs"].scaling
    assert "workers jobs: processes 1 → 2" in plan.resized
