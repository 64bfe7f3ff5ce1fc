"""Building a worker group's handlers (task name → ``TaskHandler``) from its settings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from surge.config.settings import CommandHandler, PythonHandler, WorkerSettings
from surge.errors import ConfigError
from surge.profiling.nytprof import NYTPROF, prepared_environment
from surge.worker.handlers.base import TaskHandler
from surge.worker.handlers.command import PerTaskCommandHandler
from surge.worker.handlers.persistent import PersistentCommandHandler
from surge.worker.handlers.process import CommandSpec
from surge.worker.handlers.python import ExecutorPools, PythonCallableHandler, extend_sys_path

__all__ = ["build_handlers", "extend_sys_path", "resolved_python_path"]


def resolved_python_path(worker: WorkerSettings, config_dir: str) -> list[str]:
    return [str((Path(config_dir) / entry).resolve()) for entry in worker.python_path]


def build_handlers(
    worker: WorkerSettings, config_dir: str, pools: ExecutorPools, data_dir: str
) -> dict[str, TaskHandler]:
    """Every handler of the group, imported and checked now (a typo fails at start-up,
    not on the first message). Call ``extend_sys_path`` first. A profiled command handler
    writes its profiles under ``data_dir``."""
    handlers: dict[str, TaskHandler] = {}
    problems: list[str] = []
    for task, handler_settings in worker.handlers.items():
        try:
            handlers[task] = _build_one(task, handler_settings, config_dir, pools, data_dir)
        except ConfigError as exc:
            problems.extend(f"handlers.{task}: {problem}" for problem in exc.problems)
    if problems:
        raise ConfigError(problems)
    return handlers


def _build_one(
    task: str, settings: str | PythonHandler | CommandHandler, config_dir: str,
    pools: ExecutorPools, data_dir: str,
) -> TaskHandler:
    if isinstance(settings, str):
        return PythonCallableHandler(settings, "thread", pools)
    if isinstance(settings, PythonHandler):
        return PythonCallableHandler(settings.function, settings.executor, pools)
    spec = CommandSpec.from_settings(settings, config_dir)
    if not Path(spec.cwd).is_dir():
        raise ConfigError([f"directory {spec.cwd!r} does not exist"])
    if settings.profile == NYTPROF:
        spec = replace(spec, env=prepared_environment(data_dir, task, spec.env))
    if settings.mode == "persistent":
        return PersistentCommandHandler(spec, settings.processes, tag=task)
    return PerTaskCommandHandler(spec)
