"""``surge check-config``: a bad config fails with a message naming the key or the name."""

from __future__ import annotations

import subprocess
import sys

import pytest

from integration.surge_up import EXAMPLES

GOOD_ROUTES = """
[pools.web]
command = "starman --listen 127.0.0.1:{port} app.psgi"
[[routes]]
prefix = "/"
proxy = { pool = "web" }
"""


def check_config(tmp_path, text: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "surge.toml"
    config.write_text(text)
    return subprocess.run([sys.executable, "-m", "surge.cli", "check-config", "-c", str(config)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("text", "expected"), [
    ('[gateway]\nlissten = "0.0.0.0:80"\n' + GOOD_ROUTES, "gateway.lissten: unknown key"),
    ('[gateway]\nheader_timeout = "soon"\n' + GOOD_ROUTES, "gateway.header_timeout"),
    ("[gateway]\nprocesses = []\n" + GOOD_ROUTES, "gateway.processes"),
    (GOOD_ROUTES.replace('pool = "web"', 'pool = "wbe"'), "unknown pool 'wbe'"),
    # The admin API has no TLS: off loopback its token would cross the network in clear.
    ('[admin]\nlisten = "0.0.0.0:8081"\n' + GOOD_ROUTES,
     "admin.listen: reachable from the network"),
    ('[admin]\nlisten = "192.168.1.5:8081"\n' + GOOD_ROUTES,
     "admin.allow_remote_without_tls = true"),
    # The unknown pool is named even when another key is wrong too.
    ('[gateway]\nlissten = 1\n' + GOOD_ROUTES.replace('pool = "web"', 'pool = "wbe"'),
     "routes[0].proxy.pool: unknown pool 'wbe'"),
])
def test_bad_config_fails_naming_the_problem(tmp_path, text, expected):
    result = check_config(tmp_path, text)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "configuration OK" not in result.stdout


def test_wrong_type_names_the_value(tmp_path):
    result = check_config(tmp_path, '[gateway]\nheader_timeout = "soon"\n' + GOOD_ROUTES)
    assert "'soon'" in result.stderr


@pytest.mark.parametrize("example", ["python-app", "perl-legacy"])
def test_examples_pass(example):
    result = subprocess.run(
        [sys.executable, "-m", "surge.cli", "check-config", "-c",
         str(EXAMPLES / example / "surge.toml")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
    assert "proxy → pool web" in result.stdout


def test_remote_admin_only_when_the_risk_is_accepted(tmp_path):
    result = check_config(tmp_path, '[admin]\nlisten = "0.0.0.0:8081"\n'
                                    'allow_remote_without_tls = true\n' + GOOD_ROUTES)
    assert result.returncode == 0, result.stderr


def test_up_refuses_a_remote_admin_listen_too(tmp_path):
    result = subprocess.run([sys.executable, "-m", "surge.cli", "up", "--admin", "0.0.0.0:0",
                             "--data-dir", str(tmp_path / "data")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "admin.listen: reachable from the network" in result.stderr
    assert "'0.0.0.0:0'" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before anything started
