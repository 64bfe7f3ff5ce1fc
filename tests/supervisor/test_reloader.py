"""A reload from start to end against a fake supervisor: what it applies, refreshes, rolls
back and reports (no processes)."""

from __future__ import annotations

import asyncio

import pytest

from supervisor.fakes import FakeReloadHost
from surge.config.loader import load_settings
from surge.supervisor.admin import Busy, NotFound
from surge.supervisor.reload import Reloader

CONFIG = """
[pools.web]
command = "{command} --port {{port}}"
workers = {workers}
instances = {{ min = 1, max = 4, desired = {desired} }}
[[routes]]
prefix = "/"
proxy = {{ pool = "web" }}
"""


def write(path, command="app", workers=2, desired=2, extra=""):
    path.write_text(CONFIG.format(command=command, workers=workers, desired=desired) + extra)
    return path


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr("surge.supervisor.refresh.POLL_INTERVAL", 0.001)


def reload_once(host):
    reloader = Reloader(host)
    report = reloader.request("api", refuse_if_busy=True)
    asyncio.run(reloader.run(report))
    return report.to_json()


def messages(report):
    return [step["message"] for step in report["steps"]]


def test_new_command_and_workers_replace_the_instances(tmp_path):
    config = write(tmp_path / "surge.toml")
    host = FakeReloadHost(load_settings(config), config)
    write(config, command="app-v2", workers=3)
    report = reload_once(host)
    assert report["state"] == "succeeded", report
    web = host.settings.pools["web"]
    assert (web.command, web.workers) == ("app-v2 --port {port}", 3)
    assert [r["settings"].command for r in host.instances.values()] == [web.command] * 2
    assert host.fewest_serving >= 2
    assert host.replaced == [("gateway", "gateway")]  # workers is the gateways' limit too
    assert "web-3 is healthy and in service" in messages(report)
    assert not any("restart surge up" in m for m in messages(report))


def test_an_instance_that_never_turns_healthy_is_rolled_back(tmp_path):
    config = write(tmp_path / "surge.toml")
    old = load_settings(config)
    host = FakeReloadHost(old, config, broken={"app-v2 --port {port}"})
    write(config, command="app-v2", desired=3)
    report = reload_once(host)
    assert report["state"] == "failed"
    assert "web-3 exited before it turned healthy" in report["problems"][0]
    assert "pool web: rolling back to the old settings" in messages(report)
    assert "pool web: rolled back; every instance runs the old settings" in messages(report)
    assert host.settings.pools["web"] == old.pools["web"]  # desired size too
    assert host.resized[-1] == ("pool", "web", 2)
    serving = [r for r in host.instances.values() if not r["leaving"]]
    assert [r["settings"] for r in serving] == [old.pools["web"]] * 2
    assert all(r["serving"] for r in serving)


def test_an_invalid_config_is_rejected_and_nothing_changes(tmp_path):
    config = write(tmp_path / "surge.toml")
    host = FakeReloadHost(load_settings(config), config)
    config.write_text(config.read_text() + "\n[pools.web.instance_refresh]\nmin_healthy = 1\n")
    report = reload_once(host)
    assert report["state"] == "rejected"
    assert any("pools.web.instance_refresh.min_healthy: unknown key" in p
               for p in report["problems"])
    assert host.applied == [] and host.events == []


def test_what_needs_a_restart_is_said_and_kept(tmp_path):
    config = write(tmp_path / "surge.toml")
    host = FakeReloadHost(load_settings(config), config)
    write(config, extra='[queues.more]\nvisibility_timeout = "5s"\n')
    report = reload_once(host)
    assert report["state"] == "succeeded"
    assert "queues changed: restart surge up to apply it" in messages(report)
    assert [s["level"] for s in report["steps"]] == ["warning"]
    assert host.settings.queues == {}


def test_api_callers_are_told_busy_signals_wait(tmp_path):
    config = write(tmp_path / "surge.toml")
    reloader = Reloader(FakeReloadHost(load_settings(config), config))
    with pytest.raises(NotFound):
        reloader.report()
    first = reloader.request("api", refuse_if_busy=True)
    with pytest.raises(Busy, match="reload 1 is waiting"):
        reloader.request("api", refuse_if_busy=True)
    second = reloader.request("SIGHUP", refuse_if_busy=False)

    async def both():
        await asyncio.gather(reloader.run(first), reloader.run(second))

    asyncio.run(both())
    assert (first.state, second.state) == ("succeeded", "succeeded")
    assert second.steps[0]["time"] >= first.finished  # one at a time
    assert reloader.report() is second and reloader.report(1) is first
    assert messages(first.to_json()) == ["nothing to apply: the configuration is as running"]
