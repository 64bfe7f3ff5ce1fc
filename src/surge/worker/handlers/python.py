"""Python callables as handlers: ``package.module:function(payload) -> JSON value``.

Coroutine functions are awaited on the worker's loop. A sync function runs ``inline`` (on
the loop: only for quick work), in a ``thread`` pool, or in a ``process`` pool (CPU-bound
work; the function is re-imported by name in the child). A thread cannot be interrupted, so a
timed-out sync task is abandoned, not stopped: its slot and message are released anyway.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Literal

from surge.errors import ConfigError, HandlerError
from surge.worker.handlers.base import TaskCall

Executors = Literal["thread", "process", "inline"]


def resolve_callable(spec: str) -> Callable[..., Any]:
    """The function named by ``"package.module:function"`` (dots after the colon walk
    attributes, e.g. ``"mod:Class.method"``)."""
    module_name, sep, attribute_path = spec.partition(":")
    if not sep or not module_name or not attribute_path:
        raise ConfigError([f"handler {spec!r}: expected 'package.module:function'"])
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError([f"handler {spec!r}: cannot import {module_name!r}: {exc}"]) from exc
    for attribute in attribute_path.split("."):
        try:
            target = getattr(target, attribute)
        except AttributeError as exc:
            raise ConfigError(
                [f"handler {spec!r}: {module_name!r} has no attribute {attribute_path!r}"]
            ) from exc
    if not callable(target):
        raise ConfigError([f"handler {spec!r}: {attribute_path!r} is not callable"])
    return target


def extend_sys_path(entries: list[str]) -> None:
    """Put handler directories first on ``sys.path`` (here, and in each pool process)."""
    for entry in reversed(entries):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def _run_in_child(spec: str, payload: Any) -> tuple[bool, Any, bool]:
    """Runs in the process pool. Returns ``(ok, result_or_message, permanent)`` rather than
    raising, so ``HandlerError.permanent`` survives the trip back (it does not pickle)."""
    try:
        return True, resolve_callable(spec)(payload), False
    except HandlerError as exc:
        return False, str(exc), exc.permanent
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}", False


class ExecutorPools:
    """The thread and process pools a worker process shares among its Python handlers,
    created on first use and sized to the worker's concurrency."""

    def __init__(self, size: int, python_path: list[str]) -> None:
        self._size = size
        self._python_path = python_path
        self._threads: ThreadPoolExecutor | None = None
        self._processes: ProcessPoolExecutor | None = None

    def threads(self) -> Executor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self._size, thread_name_prefix="surge-task")
        return self._threads

    def processes(self) -> Executor:
        if self._processes is None:
            # spawn: the worker has a running loop and threads, which fork would copy half-way.
            self._processes = ProcessPoolExecutor(
                self._size,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=extend_sys_path,
                initargs=(self._python_path,),
            )
        return self._processes

    def shutdown(self) -> None:
        for pool in (self._threads, self._processes):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._threads = self._processes = None


class PythonCallableHandler:
    def __init__(self, spec: str, executor: Executors, pools: ExecutorPools) -> None:
        self.spec = spec
        self.function = resolve_callable(spec)
        self.executor: Executors = executor
        self._pools = pools

    async def run(self, call: TaskCall) -> Any:
        if inspect.iscoroutinefunction(self.function):
            return await self.function(call.payload)
        loop = asyncio.get_running_loop()
        if self.executor == "inline":
            result = self.function(call.payload)
        elif self.executor == "thread":
            result = await loop.run_in_executor(self._pools.threads(), self.function, call.payload)
        else:
            ok, value, permanent = await loop.run_in_executor(
                self._pools.processes(), _run_in_child, self.spec, call.payload
            )
            if not ok:
                raise HandlerError(value, permanent=permanent)
            result = value
        if inspect.isawaitable(result):
            result = await result
        return result

    async def close(self) -> None:
        """The pools are shared: ``ExecutorPools.shutdown`` releases them once."""
