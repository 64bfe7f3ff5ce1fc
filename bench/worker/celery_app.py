"""Celery side of the worker benchmark: the same two tasks, results kept in redis (db 1)
as surge keeps them in its result store. Broker and backend URLs from the environment."""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("bench", broker=os.environ["BENCH_BROKER_URL"],
             backend=os.environ["BENCH_RESULT_URL"])
app.conf.update(
    task_default_queue="bench",
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=3600,
)


@app.task(name="noop")
def noop(n: int) -> None:
    return None


@app.task(name="sleep_10ms")
def sleep_10ms(n: int) -> None:
    time.sleep(0.01)
