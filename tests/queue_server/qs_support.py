"""Helpers of the queue server tests: a real server on a free port in a thread, boto3 clients."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import boto3
import uvloop
from botocore.config import Config

from surge.config.settings import Settings
from surge.queue.server.main import RunningQueueServer


class ServerThread:
    """A RunningQueueServer on its own uvloop in a thread."""

    def __init__(self, data_dir: Path, **backend: Any) -> None:
        # A small disk reserve: every test's data dir holds one (the default is 8 MiB).
        backend = {"listen": "127.0.0.1:0", "disk_reserve": "256k", **backend}
        self.settings = Settings.model_validate(
            {"data_dir": str(data_dir), "queue_backend": backend})
        self.running = RunningQueueServer(self.settings)
        self.loop = uvloop.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.running.start())
        self._started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.running.stop())
        self.loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(15)

    @property
    def endpoint(self) -> str:
        host, port = self.running.address
        return f"http://{host}:{port}"


def make_client(endpoint: str, access_key: str = "AKIDEXAMPLE", secret: str = "secret") -> Any:
    return boto3.client(
        "sqs", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=access_key, aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, read_timeout=30),
    )
