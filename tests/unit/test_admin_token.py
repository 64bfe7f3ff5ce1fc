"""The admin token: made once per data directory, private to its owner, found by callers."""

import os
import stat
import threading

import pytest

from surge.admin_token import (
    ADMIN_TOKEN_ENV,
    AdminTokenError,
    caller_token,
    ensure_token,
    presented_token,
    token_matches,
    token_path,
)


def test_made_once_private_and_kept(tmp_path):
    data_dir = tmp_path / "data"
    token = ensure_token(data_dir)
    assert len(token) >= 40  # 32 random bytes, URL-safe base64
    assert stat.S_IMODE(token_path(data_dir).stat().st_mode) == 0o600
    assert ensure_token(data_dir) == token  # a restart keeps it
    assert ensure_token(tmp_path / "other") != token
    assert [p.name for p in data_dir.iterdir()] == ["admin.token"]  # no temporary left


def test_two_starts_at_once_agree_on_one_token(tmp_path):
    tokens = []
    threads = [threading.Thread(target=lambda: tokens.append(ensure_token(tmp_path)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(tokens)) == 1


def test_a_token_others_can_read_is_refused(tmp_path):
    ensure_token(tmp_path)
    os.chmod(token_path(tmp_path), 0o644)
    with pytest.raises(AdminTokenError, match="chmod 600"):
        ensure_token(tmp_path)
    with pytest.raises(AdminTokenError, match="open to other users"):
        caller_token(tmp_path, {})


def test_an_empty_token_file_is_refused(tmp_path):
    token_path(tmp_path).write_text("\n")
    os.chmod(token_path(tmp_path), 0o600)
    with pytest.raises(AdminTokenError, match="too short"):
        ensure_token(tmp_path)


def test_callers_prefer_the_variable_then_the_file(tmp_path):
    token = ensure_token(tmp_path)
    assert caller_token(tmp_path, {}) == token
    assert caller_token(tmp_path, {ADMIN_TOKEN_ENV: "remote-token-0123456789"}) == \
        "remote-token-0123456789"
    with pytest.raises(AdminTokenError, match=r"no admin token at .*SURGE_ADMIN_TOKEN"):
        caller_token(tmp_path / "missing", {})
    with pytest.raises(AdminTokenError, match="too short"):
        caller_token(tmp_path, {ADMIN_TOKEN_ENV: "short"})


def test_bearer_header_parsing_and_comparison():
    assert presented_token("Bearer abc") == "abc"
    assert presented_token("bearer   abc  ") == "abc"
    for header in (None, "", "Bearer", "Bearer   ", "Basic abc", "abc"):
        assert presented_token(header) is None
    assert token_matches("abc", "abc")
    assert not token_matches("abc", "abd") and not token_matches("abc", "ab")
    assert not token_matches("abc", "ÿbc")  # any latin-1 header text compares, never raises
