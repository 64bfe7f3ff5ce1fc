"""Dramatiq side of the worker benchmark: the same two tasks, results kept in redis (db 1)
through the Results middleware. Broker and backend URLs from the environment."""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

broker = RedisBroker(url=os.environ["BENCH_BROKER_URL"])
broker.add_middleware(Results(backend=RedisBackend(url=os.environ["BENCH_RESULT_URL"])))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, max_retries=0)
def noop(n: int) -> None:
    return None


@dramatiq.actor(store_results=True, max_retries=0)
def sleep_10ms(n: int) -> None:
    time.sleep(0.01)
