"""The persistent command handler: N long-running processes speaking JSON lines.

Line protocol (UTF-8, one JSON object per line, ``\\n``-terminated, on stdin/stdout):

    request   {"id": "<task id>", "task": "<task name>", "payload": <any JSON>}
    response  {"id": "<same id>", "ok": true, "result": <any JSON>}
          or  {"id": "<same id>", "ok": false, "error": "<text>", "permanent": <bool>}

A process gets one request at a time and must answer it before the next is written (so a
single-threaded legacy script needs no concurrency of its own); ``processes`` of them run
side by side. stdout carries responses only: diagnostics go to stderr, which is logged as
tagged lines. The process should exit when its stdin closes. ``SURGE_PERSISTENT=1`` is set
in its environment so one script can serve both modes.

A process that exits, or answers with something that is not a response to the request (not
JSON, wrong id), fails the task in hand (retried) and is replaced by a fresh one. A time limit
cancels the call, which terminates the process (SIGTERM, then SIGKILL) and replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson

from surge.errors import HandlerError
from surge.worker.handlers.base import TaskCall
from surge.worker.handlers.process import CommandSpec, log_stderr, start_process, terminate


class ProtocolViolation(HandlerError):
    """The process's answer broke the line protocol; it cannot be trusted with more work."""


def encode_request(call: TaskCall) -> bytes:
    return orjson.dumps({"id": call.task_id, "task": call.task, "payload": call.payload}) + b"\n"


def decode_response(line: bytes, expected_id: str) -> Any:
    """The result of a response line, or ``HandlerError`` for a failure it reports."""
    try:
        response = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ProtocolViolation(f"response is not JSON: {line[:200]!r}") from exc
    if not isinstance(response, dict) or response.get("id") != expected_id:
        raise ProtocolViolation(f"response is not for task {expected_id!r}: {line[:200]!r}")
    if response.get("ok") is True:
        return response.get("result")
    raise HandlerError(
        str(response.get("error") or "handler reported a failure"),
        permanent=response.get("permanent") is True,
    )


class HandlerProcess:
    """One long-running process and its stderr logger."""

    def __init__(self, process: asyncio.subprocess.Process, tag: str) -> None:
        self.process = process
        self._stderr_logger = asyncio.create_task(
            log_stderr(process.stderr, f"{tag} pid={process.pid}")
        )

    @classmethod
    async def start(cls, spec: CommandSpec, tag: str) -> HandlerProcess:
        return cls(await start_process(spec, {"SURGE_PERSISTENT": "1"}), tag)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def call(self, call: TaskCall) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(encode_request(call))
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise HandlerError(f"handler process {self.process.pid} is gone") from exc
        line = await self.process.stdout.readline()
        if not line:
            code = await self.process.wait()
            raise HandlerError(f"handler process {self.process.pid} died (exit {code}) mid-task")
        return decode_response(line, call.task_id)

    async def stop(self) -> None:
        """Close stdin (the polite way to ask it to exit), then terminate if it lingers."""
        if self.process.stdin is not None and self.alive:
            self.process.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 1.0)
        await terminate(self.process)
        with contextlib.suppress(asyncio.CancelledError):
            await self._stderr_logger


class PersistentCommandHandler:
    def __init__(self, spec: CommandSpec, processes: int, tag: str) -> None:
        self.spec = spec
        self.tag = tag
        self._idle: asyncio.Queue[HandlerProcess | None] = asyncio.Queue()
        # None stands for a process not started yet (or replaced): started on first use.
        for _ in range(processes):
            self._idle.put_nowait(None)
        self._all: set[HandlerProcess] = set()

    async def run(self, call: TaskCall) -> Any:
        handler_process = await self._idle.get()
        try:
            if handler_process is None or not handler_process.alive:
                handler_process = await self._replace(handler_process)
            result = await handler_process.call(call)
        except BaseException as exc:
            if handler_process is not None and (
                not isinstance(exc, HandlerError) or isinstance(exc, ProtocolViolation)
                or not handler_process.alive
            ):
                # Cancelled mid-task, protocol broken or dead: this process is done for.
                await asyncio.shield(self._retire(handler_process))
                handler_process = None
            self._idle.put_nowait(handler_process)
            raise
        self._idle.put_nowait(handler_process)
        return result

    async def _replace(self, old: HandlerProcess | None) -> HandlerProcess:
        if old is not None:
            await self._retire(old)
        fresh = await HandlerProcess.start(self.spec, self.tag)
        self._all.add(fresh)
        return fresh

    async def _retire(self, handler_process: HandlerProcess) -> None:
        self._all.discard(handler_process)
        await handler_process.stop()

    async def close(self) -> None:
        await asyncio.gather(*(p.stop() for p in list(self._all)))
        self._all.clear()
