"""What both command modes share: starting a handler process, logging its stderr as tagged
lines, and stopping it (SIGTERM, then SIGKILL after a grace period)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from surge.config.settings import CommandHandler

log = logging.getLogger("surge.worker.command")

# A response line (persistent mode) or a result (per-task) may be large: a result is JSON.
STREAM_LIMIT = 16 * 1024 * 1024
TERMINATE_GRACE_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class CommandSpec:
    argv: list[str]
    cwd: str
    env: dict[str, str] = field(default_factory=dict)
    permanent_failure_exit_code: int | None = 100

    @classmethod
    def from_settings(cls, settings: CommandHandler, config_dir: str) -> CommandSpec:
        directory = Path(config_dir) / (settings.directory or ".")
        return cls(
            argv=shlex.split(settings.command),
            cwd=str(directory.resolve()),
            env=dict(settings.env),
            permanent_failure_exit_code=settings.permanent_failure_exit_code,
        )


async def start_process(
    spec: CommandSpec, extra_env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    env = {**os.environ, **spec.env, **(extra_env or {})}
    try:
        return await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=spec.cwd,
            env=env,
            limit=STREAM_LIMIT,
            start_new_session=True,  # a Ctrl-C at the terminal reaches the worker, not each task
        )
    except OSError as exc:
        raise OSError(f"cannot start {shlex.join(spec.argv)!r} in {spec.cwd}: {exc}") from exc


async def log_stderr(stream: asyncio.StreamReader | None, tag: str) -> str:
    """Forward every stderr line of a handler process to the log, tagged with its origin;
    returns the last non-blank line (the likeliest explanation of a failure)."""
    last = ""
    if stream is None:
        return last
    while True:
        line = await stream.readline()
        if not line:
            return last
        text = line.decode(errors="replace").rstrip()
        last = text or last
        log.warning("[%s] %s", tag, text)


async def terminate(
    process: asyncio.subprocess.Process, grace: float = TERMINATE_GRACE_SECONDS
) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; always reaps the process."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
