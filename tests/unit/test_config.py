"""Config validation: every error names the key, the bad value and what is allowed."""

import pytest

from surge.config.loader import load_settings, validate_settings
from surge.config.types import parse_byte_size, parse_duration
from surge.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("250ms", 0.25), ("5m", 300), ("2h", 7200), ("30d", 2592000), (12, 12)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["30x", "-1s", "", "s", True])
def test_bad_durations_say_what_is_allowed(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_sizes():
    assert parse_byte_size("8k") == 8192
    assert parse_byte_size("1MiB") == 1048576
    with pytest.raises(ValueError, match="size"):
        parse_byte_size("8 parsecs")


def test_embedded_default_is_valid():
    settings = load_settings()
    assert settings.routes[-1].proxy is not None


def test_typo_key_is_named():
    with pytest.raises(ConfigError) as error:
        validate_settings({"gateway": {"lissten": "0.0.0.0:80"}})
    assert "gateway.lissten: unknown key" in str(error.value)


def test_wrong_type_is_named_with_value():
    with pytest.raises(ConfigError) as error:
        validate_settings({"gateway": {"header_timeout": "soon"}})
    assert "gateway.header_timeout" in str(error.value)
    assert "'soon'" in str(error.value)


def test_unknown_pool_in_route_is_named():
    with pytest.raises(ConfigError) as error:
        validate_settings({"routes": [{"prefix": "/", "proxy": {"pool": "wbe"}}]})
    assert "routes[0].proxy.pool: unknown pool 'wbe'" in str(error.value)


def test_unknown_pool_is_named_even_with_other_errors():
    # pydantic skips model validators once a field fails: the loader checks references too.
    with pytest.raises(ConfigError) as error:
        validate_settings({
            "gateway": {"lissten": "0.0.0.0:80", "header_timeout": "soon"},
            "routes": [{"prefix": "/", "proxy": {"pool": "wbe"}},
                       {"prefix": "/q", "enqueue": {"queue": "nope", "task": "t"}}],
        })
    problems = error.value.problems
    assert any("gateway.lissten: unknown key" in p for p in problems)
    assert any("gateway.header_timeout" in p and "'soon'" in p for p in problems)
    assert any("routes[0].proxy.pool: unknown pool 'wbe'" in p for p in problems)
    assert any("routes[1].enqueue.queue: unknown queue 'nope'" in p for p in problems)


def test_reference_problem_is_not_reported_twice():
    with pytest.raises(ConfigError) as error:
        validate_settings({"routes": [{"prefix": "/", "proxy": {"pool": "wbe"}}]})
    assert len(error.value.problems) == 1


def test_examples_are_valid_and_python_example_equals_embedded_default():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "examples"
    python_example = load_settings(root / "python-app" / "surge.toml")
    assert python_example == load_settings()
    perl = load_settings(root / "perl-legacy" / "surge.toml")
    assert "starman" in perl.pools["web"].command


def test_gateway_priority_is_a_nice_value():
    with pytest.raises(ConfigError) as error:
        validate_settings({"gateway": {"priority": -30}})
    assert "gateway.priority" in str(error.value) and "-30" in str(error.value)
    assert "-20" in str(error.value)
    assert validate_settings({"gateway": {"priority": -5}}).gateway.priority == -5


@pytest.mark.parametrize("listen", ["127.0.0.1:8081", "127.0.0.2:0", "localhost:8081",
                                    "[::1]:8081"])
def test_admin_on_loopback_is_fine(listen):
    assert str(load_settings(None, {"admin.listen": listen}).admin.listen).endswith(
        listen.rsplit(":", 1)[1])


@pytest.mark.parametrize("listen", ["0.0.0.0:8081", ":8081", "[::]:8081", "10.1.2.3:8081",
                                    "admin.example.com:8081"])
def test_admin_off_loopback_needs_the_risk_accepted(listen):
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"admin.listen": listen})
    [problem] = caught.value.problems
    assert "admin.listen: reachable from the network" in problem
    assert "admin.allow_remote_without_tls = true" in problem
    allowed = load_settings(None, {"admin.listen": listen, "admin.allow_remote_without_tls": True})
    assert allowed.admin.allow_remote_without_tls


@pytest.mark.parametrize(("refresh", "expected"), [
    ({"min_healthy_percentage": 101}, "min_healthy_percentage"),
    ({"max_healthy_percentage": 99}, "max_healthy_percentage"),
    ({"min_healthy_percentage": 0, "max_healthy_percentage": 150}, "by 100 at most"),
])
def test_instance_refresh_bounds(refresh, expected):
    with pytest.raises(ConfigError, match=expected):
        load_settings(None, {"pools.web.instance_refresh": refresh})


def test_slow_client_settings_are_checked_and_explained():
    from surge.config.explain import describe

    with pytest.raises(ConfigError) as error:
        validate_settings({"gateway": {"send_timeout": 0, "response_buffer_size": 0}})
    assert "gateway.send_timeout" in str(error.value)
    assert "gateway.response_buffer_size" in str(error.value)
    with pytest.raises(ConfigError, match=r"routes\.0\.proxy\.request_bufering: unknown key"):
        validate_settings({"pools": {"web": {"targets": ["127.0.0.1:1"]}},
                           "routes": [{"proxy": {"pool": "web", "request_bufering": False}}]})
    settings = validate_settings({
        "gateway": {"body_min_rate": "1k", "body_rate_grace": "5s"},
        "pools": {"web": {"targets": ["127.0.0.1:1"]}},
        "routes": [{"prefix": "/live", "proxy": {"pool": "web", "request_buffering": False}},
                   {"proxy": {"pool": "web"}}]})
    assert (settings.gateway.body_min_rate, settings.gateway.body_rate_grace) == (1024, 5.0)
    described = describe(settings).splitlines()
    assert "route     * /live proxy → pool web (streams request bodies: a slow client " \
           "holds a target slot)" in described
    assert "route     * / proxy → pool web" in described
