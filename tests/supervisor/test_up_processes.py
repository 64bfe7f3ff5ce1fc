"""``surge up`` supervising real processes — pool instances only (plain ``http.server``),
so restart, liveness, scaling, draining and shutdown are tested without the other parts."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from integration.surge_up import SurgeUp, http, wait_for, write_config

CONFIG = """
data_dir = "data"
[gateway]
processes = 0
[queue_backend]
url = "http://127.0.0.1:1"
[supervisor]
restart_backoff_base = "0.2s"
max_fast_crashes = 3
fast_crash_window = "30s"
liveness_interval = "0.5s"
liveness_timeout = "2s"
shutdown_timeout = "20s"
[pools.web]
command = "{python} -m http.server {{port}} --bind 127.0.0.1"
instances = {{ min = 1, max = 3, desired = 1 }}
deregistration_delay = "1s"
start_timeout = "20s"
[pools.broken]
command = "{python} -c 'import sys; sys.exit(3)' {{port}}"
instances = {{ min = 0, max = 1, desired = 1 }}
"""


@pytest.fixture(scope="module")
def surge(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("up")
    config = write_config(tmp_path / "surge.toml", CONFIG.format(python=sys.executable))
    up = SurgeUp(tmp_path, config).start()
    try:
        wait_for("a registered web target", lambda: active_targets(up), 30)
        yield up
    finally:
        up.close()


def targets(up: SurgeUp) -> list[dict]:
    status, document = up.admin_call("GET", "/v1/targets")
    assert status == 200
    return document["pools"]["web"]


def active_targets(up: SurgeUp) -> list[str]:
    up.check_alive()
    return [t["address"] for t in targets(up) if t["state"] == "active"]


def post(up: SurgeUp, path: str, document: object | None = None) -> tuple[int, dict]:
    return up.admin_call("POST", path, document)


def test_instance_registered_only_once_it_answers(surge):
    [address] = active_targets(surge)
    status, _, _ = http("GET", f"http://{address}/")
    assert status == 200
    web = surge.processes()["web-1"]
    assert web["state"] == "running" and web["healthy"] and web["pid"]


def test_crash_loop_gives_up_loudly(surge):
    broken = wait_for("broken pool to fail",
                      lambda: surge.processes()["broken-1"]["state"] == "failed", 20)
    assert broken
    assert "broken-1 crashed 3 times" in surge.log_path.read_text()
    surge.check_alive()


def test_kill_9_instance_is_replaced_within_5s(surge):
    before = surge.processes()["web-1"]
    [old_address] = active_targets(surge)
    os.kill(before["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    new_address = wait_for("a new target", lambda: [a for a in active_targets(surge)
                                                    if a != old_address], 10, interval=0.05)
    assert time.monotonic() - killed_at < 5
    assert http("GET", f"http://{new_address[0]}/")[0] == 200
    after = surge.processes()["web-1"]
    assert after["restarts"] == before["restarts"] + 1 and after["pid"] != before["pid"]


def test_hung_instance_is_killed_and_restarted(surge):
    before = surge.processes()["web-1"]
    os.kill(before["pid"], signal.SIGSTOP)
    after = wait_for("the hung instance to be restarted", lambda: (
        p := surge.processes()["web-1"])["restarts"] > before["restarts"]
        and p["state"] == "running" and p, 15)
    assert after["pid"] != before["pid"]
    assert '"event":"child_hung"' in surge.log_path.read_text()


def test_scale_bounds_are_enforced(surge):
    status, answer = post(surge, "/v1/pools/web/scale", {"desired": 5})
    assert status == 400
    assert answer["error"] == "pool 'web' desired must be between 1 and 3, got 5"
    status, answer = post(surge, "/v1/workers/nope/scale", {"processes": 1})
    assert status == 404


def test_scale_out_and_in_drains_then_stops(surge):
    assert post(surge, "/v1/pools/web/scale", {"desired": 3}) == (
        200, {"pool": "web", "desired": 3})
    wait_for("3 active targets", lambda: len(active_targets(surge)) == 3, 30)
    surge.remember_descendants()
    pids = {n: p["pid"] for n, p in surge.processes().items() if n.startswith("web-")}
    assert post(surge, "/v1/pools/web/scale", {"desired": 1})[0] == 200
    states = {t["state"] for t in targets(surge)}
    assert "draining" in states  # reported draining for deregistration_delay first
    wait_for("one target left", lambda: len(targets(surge)) == 1, 10)
    wait_for("retired instances gone", lambda: set(surge.processes()) & set(pids) == {"web-1"},
             10)
    for name, pid in pids.items():
        if name != "web-1":
            wait_for(f"{name} to exit", lambda pid=pid: not _alive(pid), 10)


def test_drain_endpoint_replaces_the_target(surge):
    [address] = active_targets(surge)
    status, answer = post(surge, f"/v1/pools/web/targets/{address}/drain")
    assert status == 200 and answer["state"] == "draining"
    assert post(surge, "/v1/pools/web/targets/127.0.0.1:1/drain")[0] == 404
    replacement = wait_for("a replacement target",
                           lambda: [a for a in active_targets(surge) if a != address], 30)
    assert replacement
    wait_for("the drained target removed", lambda: address not in
             [t["address"] for t in targets(surge)], 10)


def test_targets_long_poll(surge):
    version = surge.admin_call("GET", "/v1/targets")[1]["version"]
    started = time.monotonic()
    status, document = surge.admin_call("GET", f"/v1/targets?wait=1&version={version}")
    assert status == 200 and document["version"] == version
    assert 0.9 <= time.monotonic() - started < 3


def test_nobody_without_the_token_controls_or_reads_it(surge):
    token_file = surge.data_dir / "admin.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    desired = surge.state()["pools"]["web"]["desired"]
    scale = f"{surge.admin}/v1/pools/web/scale"
    # No credentials: the change that stopped all task processing is refused.
    for path in ("/v1/workers/nope/scale", "/v1/pools/web/scale"):
        status, headers, _ = http("POST", f"{surge.admin}{path}", b'{"desired": 3}',
                                  headers={"Content-Type": "application/json"})
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    for path in ("/v1/state", "/v1/targets", "/v1/reload"):
        status, _, body = http("GET", f"{surge.admin}{path}")
        assert status == 401 and b"pid" not in body
    assert http("GET", scale, headers={"Authorization": "Bearer " + "x" * 43})[0] == 403
    # With the token, but sent the way a web page's fetch or form could send it.
    bearer = {"Authorization": f"Bearer {surge.token}"}
    assert http("POST", scale, b'{"desired": 3}', headers={
        **bearer, "Content-Type": "text/plain", "Origin": "https://evil.example"})[0] == 403
    assert http("POST", scale, b'{"desired": 3}', headers={
        **bearer, "Content-Type": "text/plain"})[0] == 415
    assert surge.state()["pools"]["web"]["desired"] == desired
    assert http("GET", f"{surge.admin}/v1/ping")[0] == 200


def test_state_document(surge):
    state = surge.state()
    assert {"processes", "pools", "queues", "workers"} <= set(state)
    web = state["pools"]["web"]
    assert web["min"] == 1 and web["max"] == 3
    assert all(t["instance"] and t["healthy"] is not None for t in web["targets"])


def test_status_command(surge):
    import subprocess

    def status(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "surge.cli", "status", *args],
                              capture_output=True, text=True, timeout=30,
                              env={**os.environ, "COLUMNS": "160", **(env or {})})

    # HOST:PORT, as `surge up --admin` takes it; the token from the data directory.
    table = status("--admin", f"127.0.0.1:{surge.admin_port}", "--data-dir",
                   str(surge.data_dir))
    assert table.returncode == 0, table.stderr
    for expected in ("processes", "web-", "broken-1", "failed", "pools", "active"):
        assert expected in table.stdout
    # A URL, and the token from SURGE_ADMIN_TOKEN (a remote admin API has no data dir here).
    raw = status("--admin", surge.admin, "--json", "--data-dir", "/nonexistent",
                 env={"SURGE_ADMIN_TOKEN": surge.token})
    assert raw.returncode == 0, raw.stderr
    assert json.loads(raw.stdout)["pools"]["web"]["max"] == 3
    wrong = status("--admin", surge.admin, env={"SURGE_ADMIN_TOKEN": "w" * 43})
    assert wrong.returncode == 1 and "refused the token (403" in wrong.stderr
    no_token = status("--admin", surge.admin, "--data-dir", "/nonexistent")
    assert no_token.returncode == 2 and "no admin token at /nonexistent/admin.token" in \
        no_token.stderr
    down = status("--admin", "127.0.0.1:1", "--data-dir", str(surge.data_dir))
    assert down.returncode == 1 and "cannot reach the admin API at http://127.0.0.1:1" in \
        down.stderr


def test_sighup_applies_pool_size_and_reports_what_needs_restart(surge):
    assert surge.config is not None
    text = surge.config.read_text()
    changed = text.replace("max = 3, desired = 1", "max = 3, desired = 2").replace(
        "restart_backoff_base = \"0.2s\"", "restart_backoff_base = \"0.3s\"")
    assert changed != text
    surge.config.write_text(changed)
    assert surge.process is not None
    surge.process.send_signal(signal.SIGHUP)
    wait_for("2 active targets after SIGHUP", lambda: len(active_targets(surge)) == 2, 30)
    log = surge.log_path.read_text()
    assert '"event":"reloaded"' in log
    assert '"key":"supervisor"' in log and "restart surge up to apply it" in log
    surge.config.write_text(changed.replace("[gateway]", "[gateway]\nlissten = 1"))
    surge.process.send_signal(signal.SIGHUP)
    wait_for("the bad config rejected", lambda: "reload_rejected" in surge.log_path.read_text(),
             10)
    assert len(active_targets(surge)) == 2
    surge.check_alive()


def test_sigterm_exits_0_and_leaves_nothing(surge):
    surge.remember_descendants()
    assert surge.seen_pids
    started = time.monotonic()
    assert surge.terminate(timeout=30) == 0
    assert time.monotonic() - started < 20
    assert surge.survivors() == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_children_die_with_a_killed_supervisor(tmp_path):
    config = write_config(tmp_path / "surge.toml", CONFIG.format(python=sys.executable))
    up = SurgeUp(tmp_path, config).start()
    try:
        wait_for("a registered web target", lambda: active_targets(up), 30)
        up.remember_descendants()
        assert up.seen_pids
        assert up.process is not None
        up.process.kill()  # kill -9: no chance to stop anything itself
        up.process.wait(timeout=10)
        wait_for("children to follow their parent", lambda: up.survivors() == [], 10)
    finally:
        up.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_user_and_group_flags_drop_privileges_of_children(tmp_path):
    import grp
    import pwd

    config = write_config(tmp_path / "surge.toml", """
[gateway]
processes = 0
[queue_backend]
url = "http://127.0.0.1:1"
[pools.web]
command = "/usr/bin/python3 -m http.server {port} --bind 127.0.0.1 --directory /"
""")
    group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    up = SurgeUp(tmp_path, config, extra_args=("--user", "nobody", "--group", group)).start()
    try:
        wait_for("a registered web target", lambda: active_targets(up), 30)
        import psutil

        web = psutil.Process(up.processes()["web-1"]["pid"])
        assert web.uids().real == pwd.getpwnam("nobody").pw_uid
        assert web.gids().real == grp.getgrnam(group).gr_gid
        assert up.process is not None
        assert psutil.Process(up.process.pid).uids().real == 0  # the supervisor keeps its own
    finally:
        up.close()
