"""Every queue backend runs the same suite (``test_contract.py``), as uvicorn's conftest runs
every test on both parsers. Servers (moto, surge's own queue server, redis-server) are started
once per session on free ports and each test uses fresh queue names.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest
import uvloop

from surge.queue.client.memory import MemoryQueueClient
from surge.queue.interface import QueueClient

from .servers import (
    moto_server,
    redis_server,
    surge_queue_server,
)

Scenario = Callable[[QueueClient, str], Awaitable[None]]


@dataclass
class Backend:
    """How to build a client for one backend; ``run`` gives a scenario a fresh client and a
    queue name prefix nobody else uses."""

    name: str
    make_client: Callable[[], QueueClient]
    on_uvloop: bool = False  # the gateway and workers run on uvloop

    def run(self, scenario: Scenario, timeout: float = 60) -> None:
        async def main() -> None:
            client = self.make_client()
            try:
                await asyncio.wait_for(scenario(client, f"t{uuid.uuid4().hex[:12]}"), timeout)
            finally:
                await client.close()

        if self.on_uvloop:
            uvloop.run(main())
        else:
            asyncio.run(main())


BACKENDS = ["memory", "http-moto", "aws-moto", "http-surge", "redis"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    name = request.param
    if name == "memory":
        shared = MemoryQueueClient()
        yield Backend(name, lambda: MemoryQueueClient(share_with=shared))
    elif name == "http-moto":
        from surge.queue.client.http import HttpQueueClient

        url = request.getfixturevalue("moto_url")
        yield Backend(name, lambda: HttpQueueClient(url))
    elif name == "aws-moto":
        from surge.queue.client.aws import AwsQueueClient

        url = request.getfixturevalue("moto_url")
        yield Backend(name, lambda: AwsQueueClient(
            region="us-east-1", endpoint_url=url,
            access_key_id="testing", secret_access_key="testing",
        ))
    elif name == "http-surge":
        from surge.queue.client.http import HttpQueueClient

        url = request.getfixturevalue("surge_queue_url")
        yield Backend(name, lambda: HttpQueueClient(url), on_uvloop=True)
    elif name == "redis":
        from surge.queue.client.redis_backend import RedisQueueClient

        url = request.getfixturevalue("redis_url")
        yield Backend(name, lambda: RedisQueueClient(url))
    else:
        raise AssertionError(name)


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="session")
def surge_queue_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with surge_queue_server(tmp_path_factory.mktemp("queue-data")) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis-data")) as url:
        yield url
