"""Load ``surge.toml`` (or the embedded default) into ``Settings``.

Validation happens here, up front: every problem is reported at once as
``key.path: what is wrong (got VALUE)`` so ``surge up`` never starts half-configured.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from surge.config.settings import Settings
from surge.errors import ConfigError

DEFAULT_CONFIG_NAME = "default.toml"


def default_config_text() -> str:
    return resources.files("surge.config").joinpath(DEFAULT_CONFIG_NAME).read_text()


def load_settings(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Settings from ``path`` (None: the embedded default), with dotted-key ``overrides``
    such as ``{"gateway.listen": "127.0.0.1:0"}`` applied before validation."""
    if path is None:
        text, source, config_dir = default_config_text(), "<embedded default>", _default_dir()
    else:
        file_path = Path(path)
        try:
            text = file_path.read_text()
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read the config file: {exc.strerror}"]) from exc
        source, config_dir = str(file_path), str(file_path.resolve().parent)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from exc
    raw["config_dir"] = config_dir
    for dotted_key, value in (overrides or {}).items():
        _set_dotted(raw, dotted_key, value)
    return validate_settings(raw, source)


def validate_settings(raw: dict[str, Any], source: str = "<config>") -> Settings:
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        # pydantic skips Settings' cross-reference check once any field is invalid, so the
        # references are checked here on the raw document too: every problem, in one go.
        # Settings' own cross-field problems (one top-level message, a problem a line) are kept
        # unless the raw check already reports them.
        top_level = "(top level): "
        explained = explain(exc)
        lines = [line for line in explained if not line.startswith(top_level)]
        references = reference_problems(raw)
        lines += references
        lines += [problem for line in explained if line.startswith(top_level)
                  for problem in line.removeprefix(top_level).split("\n")
                  if problem not in references]
        raise ConfigError([f"{source}: {line}" for line in lines]) from exc


def reference_problems(raw: dict[str, Any]) -> list[str]:
    """Routes naming an unknown pool or queue, workers naming an unknown queue."""
    pools = _names(raw.get("pools"))
    queues = _names(raw.get("queues"))
    problems = []
    routes = raw.get("routes")
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        if not isinstance(route, dict):
            continue
        pool = _field(route.get("proxy"), "pool")
        if pool is not None and pool not in pools:
            problems.append(f"routes[{index}].proxy.pool: unknown pool {pool!r}; "
                            f"defined pools: {sorted(pools)}")
        queue = _field(route.get("enqueue"), "queue")
        if queue is not None and queue not in queues:
            problems.append(f"routes[{index}].enqueue.queue: unknown queue {queue!r}; "
                            f"defined queues: {sorted(queues)}")
    workers = raw.get("workers")
    for name, worker in (workers.items() if isinstance(workers, dict) else []):
        queue = _field(worker, "queue")
        if queue is not None and queue not in queues:
            problems.append(f"workers.{name}.queue: unknown queue {queue!r}; "
                            f"defined queues: {sorted(queues)}")
    return problems


def _names(table: Any) -> set[str]:
    return set(table) if isinstance(table, dict) else set()


def _field(table: Any, key: str) -> Any:
    return table.get(key) if isinstance(table, dict) else None


def explain(exc: ValidationError) -> list[str]:
    """One line per problem: the key path, what is wrong and the offending value."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        if error["type"] == "missing":
            message = "required key is missing"
        value = error.get("input")
        shown = "" if error["type"] == "missing" or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{key}: {message}{shown}")
    return lines


def _set_dotted(raw: dict[str, Any], dotted_key: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted_key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _default_dir() -> str:
    """Relative paths of the embedded default resolve against the bundled example app."""
    return str(Path(__file__).resolve().parents[3] / "examples" / "python-app")
