"""What a fleet does with its load, one time step at a time (pure arithmetic).

Two shapes of load, the two kinds of group surge scales:

- **App pools** serve a closed population of clients, each sending a request, waiting for
  the answer, thinking, sending again (a browser, a wrk connection). With ``N`` clients,
  think time ``Z``, service time ``S`` per request and a fleet that completes at most ``C``
  requests per second, throughput is ``X = min(N / (Z + S), C)`` and the response time
  follows from Little's law for closed systems, ``R = N / X - Z`` (at least ``S``): below
  capacity the answer takes ``S``; past it every extra client adds to the wait.
- **Worker groups** take an open stream of tasks (``λ`` per second) into a queue; each worker
  finishes ``μ`` per second. The backlog grows by whatever arrives beyond what the workers
  finish, and a task waits for the backlog ahead of it.

CPU utilization of an instance is its share of the capacity in use, which is what a
CPU-bound app server shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PoolStep:
    throughput: float  # requests/s served by the whole fleet
    latency: float  # seconds per request as a client sees it; inf without any instance
    cpu_percent: float  # average utilization of the instances serving


def pool_step(clients: float, serving: int, capacity_per_instance: float,
              service_time: float, think_time: float) -> PoolStep:
    """The steady state of ``clients`` against ``serving`` instances."""
    if clients <= 0:
        return PoolStep(0.0, service_time, 0.0)
    capacity = serving * capacity_per_instance
    if capacity <= 0:
        return PoolStep(0.0, math.inf, 0.0)
    throughput = min(clients / (think_time + service_time), capacity)
    latency = max(service_time, clients / throughput - think_time)
    return PoolStep(throughput, latency, 100.0 * throughput / capacity)


@dataclass(frozen=True, slots=True)
class WorkerStep:
    completed: float  # tasks finished during the step
    backlog: float  # tasks waiting after the step
    wait: float  # seconds a task arriving now waits before a worker takes it; inf: no worker


def worker_step(backlog: float, arrivals_per_second: float, workers: int,
                tasks_per_second_per_worker: float, dt: float) -> WorkerStep:
    """Advance a queue by ``dt`` seconds: arrivals join the backlog, workers drain it."""
    capacity = workers * tasks_per_second_per_worker * dt
    available = backlog + arrivals_per_second * dt
    completed = min(available, capacity)
    left = available - completed
    rate = workers * tasks_per_second_per_worker
    wait = left / rate if rate > 0 else (math.inf if left > 0 else 0.0)
    return WorkerStep(completed, left, wait)
