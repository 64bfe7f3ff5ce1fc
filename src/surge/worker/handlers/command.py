"""The per-task command handler: one process per message.

The payload is written as JSON to the process's stdin (then closed); stdout must hold the
result as JSON (empty: null); stderr lines go to the log tagged ``task id``. Exit 0 is
success, ``permanent_failure_exit_code`` a permanent failure (dead-letter at once), any other
code a failure to retry. ``SURGE_TASK``, ``SURGE_TASK_ID`` and ``SURGE_ATTEMPT`` are set in its
environment. A time limit cancels the call, which terminates the process.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson

from surge.errors import HandlerError
from surge.worker.handlers.base import TaskCall
from surge.worker.handlers.process import CommandSpec, log_stderr, start_process, terminate


class PerTaskCommandHandler:
    def __init__(self, spec: CommandSpec) -> None:
        self.spec = spec

    async def run(self, call: TaskCall) -> Any:
        process = await start_process(self.spec, {
            "SURGE_TASK": call.task, "SURGE_TASK_ID": call.task_id,
            "SURGE_ATTEMPT": str(call.attempt),
        })
        stderr_logger: asyncio.Task[str] = asyncio.create_task(
            log_stderr(process.stderr, f"{call.task} {call.task_id} pid={process.pid}")
        )
        try:
            stdout = await _exchange(process, orjson.dumps(call.payload))
            last_stderr_line = await stderr_logger
        except BaseException:
            # Cancelled (time limit, shutdown) or broken: the process must not outlive its task.
            await asyncio.shield(terminate(process))
            stderr_logger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stderr_logger
            raise
        return self._outcome(process.returncode, stdout, last_stderr_line)

    def _outcome(self, exit_code: int | None, stdout: bytes, last_stderr_line: str) -> Any:
        if exit_code == 0:
            if not stdout.strip():
                return None
            try:
                return orjson.loads(stdout)
            except orjson.JSONDecodeError as exc:
                raise HandlerError(f"exit 0 but stdout is not JSON: {exc}") from exc
        permanent = exit_code == self.spec.permanent_failure_exit_code
        kind = "permanent failure" if permanent else "failure"
        detail = f": {last_stderr_line[:500]}" if last_stderr_line else ""
        raise HandlerError(f"command exited with {exit_code} ({kind}){detail}",
                           permanent=permanent)

    async def close(self) -> None:
        """Nothing outlives a task in this mode."""


async def _exchange(process: asyncio.subprocess.Process, stdin_data: bytes) -> bytes:
    """Write stdin while reading stdout (either may fill a pipe first), then reap.
    Not ``communicate``: that would also read stderr, which the tagged logger owns."""
    assert process.stdin is not None and process.stdout is not None

    async def feed(stdin: asyncio.StreamWriter) -> None:
        # A handler that exits without reading its input is judged by its exit code.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.write(stdin_data)
            await stdin.drain()
        stdin.close()

    _, stdout = await asyncio.gather(feed(process.stdin), process.stdout.read())
    await process.wait()
    return stdout
