"""Children's command lines: every child gets the same config and the resolved addresses."""

import sys

from surge.config.loader import load_settings
from surge.config.types import HostPort
from surge.supervisor.specs import (
    HeartbeatProbe,
    LaunchContext,
    child_environment,
    gateway_spec,
    pool_instance_spec,
    queue_server_spec,
    status_matches,
    worker_spec,
)

CTX = LaunchContext(config_path="/etc/surge.toml", data_dir="/var/surge",
                    queue_listen=HostPort("127.0.0.1", 4567), admin_url="http://127.0.0.1:4568")


def test_queue_server_command():
    spec = queue_server_spec(CTX, load_settings())
    assert spec.argv == (sys.executable, "-m", "surge.cli", "queue", "serve", "-c",
                         "/etc/surge.toml", "--listen", "127.0.0.1:4567",
                         "--data-dir", "/var/surge")
    assert spec.probe is not None and spec.probe.path == "/_surge/ping"


def test_embedded_default_passes_no_config_but_all_addresses():
    ctx = LaunchContext(None, "/d", HostPort("127.0.0.1", 1), "http://127.0.0.1:2")
    spec = gateway_spec(ctx, load_settings(None, {"gateway.listen": "0.0.0.0:8123"}), 2)
    assert "-c" not in spec.argv
    assert spec.name == "gateway-2"
    for flag, value in [("--listen", "0.0.0.0:8123"), ("--queue-listen", "127.0.0.1:1"),
                        ("--data-dir", "/d"), ("--targets-from", "http://127.0.0.1:2"),
                        ("--processes", "1")]:
        assert spec.argv[spec.argv.index(flag) + 1] == value
    # The port is shared by every gateway process, so liveness is this process's heartbeat.
    assert isinstance(spec.probe, HeartbeatProbe) and spec.probe.path.startswith("/d")
    assert spec.ready_event is not None


def test_worker_heartbeat_file_in_data_dir():
    spec = worker_spec(CTX, load_settings(), "images", 3)
    assert spec.argv[-1] == "images"
    assert spec.probe == HeartbeatProbe("/var/surge/run/worker-images-3.alive")
    assert spec.env["SURGE_HEARTBEAT_FILE"] == "/var/surge/run/worker-images-3.alive"


def test_pool_instance_fills_template_and_resolves_directory():
    settings = load_settings()
    spec = pool_instance_spec(settings, "web", settings.pools["web"], 1, 5123)
    assert "--port" in spec.argv and spec.argv[spec.argv.index("--port") + 1] == "5123"
    assert spec.argv[spec.argv.index("--workers") + 1] == "2"
    assert spec.cwd.endswith("examples/python-app")
    assert spec.address == "127.0.0.1:5123"


def test_child_environment_puts_virtualenv_first():
    spec = worker_spec(CTX, load_settings(), "images", 1)
    env = child_environment(spec, {"PATH": "/usr/bin"})
    assert env["PATH"].split(":")[0] == sys.executable.rsplit("/", 1)[0]
    assert env["SURGE_PROCESS_NAME"] == "worker-images-1"


def test_status_matcher():
    assert status_matches(200, "200")
    assert status_matches(204, "200,204")
    assert status_matches(299, "200-299")
    assert not status_matches(301, "200-299")


def test_gateways_get_the_admin_token_in_their_environment_only():
    token = "secret-token-0123456789abcdef"
    ctx = LaunchContext("/etc/surge.toml", "/d", HostPort("127.0.0.1", 1),
                        "http://127.0.0.1:2", admin_token=token)
    settings = load_settings()
    gateway = gateway_spec(ctx, settings, 1)
    assert token not in " ".join(gateway.argv)  # argv is visible to every user in ps
    assert child_environment(gateway, {})["SURGE_ADMIN_TOKEN"] == token
    assert token not in repr(ctx)
    # An operator's own SURGE_ADMIN_TOKEN (for the CLI) reaches no app and no worker.
    inherited = {"PATH": "/usr/bin", "SURGE_ADMIN_TOKEN": "operator-token-0123456789"}
    for spec in (worker_spec(ctx, settings, "images", 1), queue_server_spec(ctx, settings),
                 pool_instance_spec(settings, "web", settings.pools["web"], 1, 5123)):
        assert "SURGE_ADMIN_TOKEN" not in child_environment(spec, inherited)
    assert child_environment(gateway, inherited)["SURGE_ADMIN_TOKEN"] == token
