"""Handlers on their own: Python callables in each executor, and external commands in
per-task and persistent mode (success, failure, permanent failure, time limit, death)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from surge.config.settings import CommandHandler
from surge.errors import ConfigError, HandlerError
from surge.worker.handlers.base import TaskCall
from surge.worker.handlers.command import PerTaskCommandHandler
from surge.worker.handlers.persistent import (
    PersistentCommandHandler,
    ProtocolViolation,
    decode_response,
)
from surge.worker.handlers.process import CommandSpec
from surge.worker.handlers.python import ExecutorPools, PythonCallableHandler, resolve_callable

SCRIPTS = Path(__file__).parent / "scripts"
HERE = str(Path(__file__).parent)


def call(payload: Any, task_id: str = "t1") -> TaskCall:
    return TaskCall(task_id, "job", payload, 1)


def spec(script: str) -> CommandSpec:
    return CommandSpec.from_settings(
        CommandHandler(command=f"{sys.executable} {script}", directory=str(SCRIPTS)), HERE)


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def wait_for_file(path: Path) -> int:
    for _ in range(200):
        if path.exists() and path.read_text():
            return int(path.read_text())
        await asyncio.sleep(0.025)
    raise AssertionError(f"{path} never written")


class TestPython:
    def test_resolve_errors_name_the_problem(self) -> None:
        with pytest.raises(ConfigError, match=r"expected 'package\.module:function'"):
            resolve_callable("no_colon")
        with pytest.raises(ConfigError, match="cannot import"):
            resolve_callable("surely_not_a_module_xyz:f")
        with pytest.raises(ConfigError, match="has no attribute"):
            resolve_callable("os.path:nope")

    @pytest.mark.parametrize("executor", ["thread", "inline", "process"])
    def test_each_executor(self, executor: Any) -> None:
        async def scenario() -> None:
            pools = ExecutorPools(2, [HERE])
            try:
                handler = PythonCallableHandler("worker_sample_tasks:square_in_process",
                                                executor, pools)
                result = await handler.run(call({"n": 7}))
                assert result["square"] == 49
                in_this_process = result["pid"] == os.getpid()
                assert in_this_process == (executor != "process")
            finally:
                pools.shutdown()
        asyncio.run(scenario())

    def test_permanent_error_survives_the_process_pool(self) -> None:
        async def scenario() -> None:
            pools = ExecutorPools(1, [HERE])
            try:
                handler = PythonCallableHandler("worker_sample_tasks:permanent_in_process",
                                                "process", pools)
                with pytest.raises(HandlerError) as caught:
                    await handler.run(call({}))
                assert caught.value.permanent
            finally:
                pools.shutdown()
        asyncio.run(scenario())


class TestPerTaskCommand:
    def test_success_passes_payload_and_environment(self, caplog: Any) -> None:
        caplog.set_level(logging.WARNING, "surge.worker.command")
        result = asyncio.run(PerTaskCommandHandler(spec("per_task.py")).run(
            call({"mode": "ok", "x": [1, 2]}, "id-42")))
        assert result == {"got": {"mode": "ok", "x": [1, 2]}, "task": "job", "id": "id-42",
                          "attempt": "1"}
        assert any("[job id-42 pid=" in r.getMessage() and "working on ok" in r.getMessage()
                   for r in caplog.records)

    def test_empty_stdout_is_null(self) -> None:
        assert asyncio.run(PerTaskCommandHandler(spec("per_task.py")).run(
            call({"mode": "empty"}))) is None

    @pytest.mark.parametrize(("mode", "permanent", "message"), [
        ("fail", False, "exited with 3"),
        ("permanent", True, r"exited with 100 \(permanent failure\)"),
        ("garbage", False, "stdout is not JSON"),
    ])
    def test_failures(self, mode: str, permanent: bool, message: str) -> None:
        with pytest.raises(HandlerError, match=message) as caught:
            asyncio.run(PerTaskCommandHandler(spec("per_task.py")).run(call({"mode": mode})))
        assert caught.value.permanent is permanent

    def test_cancel_terminates_the_process(self, tmp_path: Path) -> None:
        async def scenario() -> None:
            pid_file = tmp_path / "pid"
            handler = PerTaskCommandHandler(spec("per_task.py"))
            running = asyncio.create_task(handler.run(call({"mode": "sleep",
                                                            "pid_file": str(pid_file)})))
            pid = await wait_for_file(pid_file)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            assert pid_gone(pid)
        asyncio.run(scenario())


class TestPersistentCommand:
    def test_response_decoding(self) -> None:
        assert decode_response(b'{"id":"a","ok":true,"result":[1]}', "a") == [1]
        with pytest.raises(ProtocolViolation):
            decode_response(b'{"id":"b","ok":true}', "a")
        with pytest.raises(ProtocolViolation):
            decode_response(b"hello", "a")
        with pytest.raises(HandlerError) as caught:
            decode_response(b'{"id":"a","ok":false,"error":"x","permanent":true}', "a")
        assert caught.value.permanent and not isinstance(caught.value, ProtocolViolation)

    def test_processes_are_reused(self) -> None:
        async def scenario() -> None:
            handler = PersistentCommandHandler(spec("persistent.py"), processes=2, tag="job")
            try:
                results = await asyncio.gather(*(handler.run(call({"n": i}, f"id{i}"))
                                                 for i in range(10)))
                assert [r["payload"]["n"] for r in results] == list(range(10))
                assert len({r["pid"] for r in results}) == 2
            finally:
                await handler.close()
        asyncio.run(scenario())

    def test_failure_reply_keeps_the_process(self) -> None:
        async def scenario() -> None:
            handler = PersistentCommandHandler(spec("persistent.py"), processes=1, tag="job")
            try:
                first = await handler.run(call({}, "a"))
                with pytest.raises(HandlerError) as caught:
                    await handler.run(call({"mode": "fail", "permanent": True}, "b"))
                assert caught.value.permanent
                assert (await handler.run(call({}, "c")))["pid"] == first["pid"]
            finally:
                await handler.close()
        asyncio.run(scenario())

    @pytest.mark.parametrize("mode", ["die", "garbage"])
    def test_dead_or_confused_process_fails_the_task_and_is_replaced(self, mode: str) -> None:
        async def scenario() -> None:
            handler = PersistentCommandHandler(spec("persistent.py"), processes=1, tag="job")
            try:
                first = await handler.run(call({}, "a"))
                with pytest.raises(HandlerError) as caught:
                    await handler.run(call({"mode": mode}, "b"))
                assert not caught.value.permanent
                assert pid_gone(first["pid"])
                assert (await handler.run(call({}, "c")))["pid"] != first["pid"]
            finally:
                await handler.close()
        asyncio.run(scenario())

    def test_cancel_kills_and_replaces_the_process(self, tmp_path: Path) -> None:
        async def scenario() -> None:
            handler = PersistentCommandHandler(spec("persistent.py"), processes=1, tag="job")
            try:
                pid_file = tmp_path / "pid"
                running = asyncio.create_task(
                    handler.run(call({"mode": "sleep", "pid_file": str(pid_file)}, "s")))
                pid = await wait_for_file(pid_file)
                running.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await running
                assert pid_gone(pid)
                assert (await handler.run(call({}, "after")))["pid"] != pid
            finally:
                await handler.close()
        asyncio.run(scenario())

    def test_close_stops_every_process(self) -> None:
        async def scenario() -> None:
            handler = PersistentCommandHandler(spec("persistent.py"), processes=2, tag="job")
            results = await asyncio.gather(handler.run(call({}, "a")), handler.run(call({}, "b")))
            await handler.close()
            assert all(pid_gone(r["pid"]) for r in results)
        asyncio.run(scenario())
