"""``run_worker_group``'s refusals: a group that does not exist, or handlers that cannot be
imported, end the command with exit code 2 and a message, before any work is taken."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from surge.config.loader import validate_settings
from surge.worker.main import EXIT_CONFIG_ERROR, run_worker_group


def settings_with(tmp_path: Path, workers: dict[str, Any]) -> Any:
    return validate_settings({
        "config_dir": str(tmp_path), "data_dir": str(tmp_path / "data"),
        "queue_backend": {"listen": "127.0.0.1:1"},
        "queues": {"jobs": {}}, "workers": workers,
    })


def test_unknown_group(tmp_path: Path, caplog: Any) -> None:
    settings = settings_with(tmp_path, {"a": {"queue": "jobs", "handlers": {"t": "m:f"}},
                                        "b": {"queue": "jobs", "handlers": {"t": "m:f"}}})
    assert run_worker_group(settings, "c") == EXIT_CONFIG_ERROR
    assert run_worker_group(settings, None) == EXIT_CONFIG_ERROR
    assert "no worker group named 'c'" in caplog.text
    assert "name the worker group to run" in caplog.text


def test_handler_that_cannot_be_imported(tmp_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.ERROR)
    settings = settings_with(tmp_path, {"jobs": {
        "queue": "jobs", "handlers": {"t": "surely_missing_module_xyz:f",
                                      "u": {"command": "x", "directory": "nowhere"}}}})
    assert run_worker_group(settings, None) == EXIT_CONFIG_ERROR
    assert "handlers.t: handler 'surely_missing_module_xyz:f': cannot import" in caplog.text
    assert "handlers.u: directory" in caplog.text
    assert not list((tmp_path / "data" / "run").glob("*.alive"))
