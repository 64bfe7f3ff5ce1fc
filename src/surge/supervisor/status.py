"""``surge status``: every process, pool, target, queue and worker group of a running
``surge up``, its scaling policies and activity, read from its admin API. Rates (backlog
change, restarts) come from two reads.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from surge.supervisor.admin_client import AdminCallError, AdminClient

RATE_INTERVAL = 1.0  # seconds between the two reads a one-shot status takes


def compute_rates(previous: dict[str, Any] | None, current: dict[str, Any]) -> dict[str, Any]:
    """Per-second change between two states: each queue's backlog and in-flight count, and
    each process's restarts (a restart loop shows up as a non-zero rate)."""
    rates: dict[str, Any] = {"queues": {}, "restarts": {}}
    if previous is None:
        return rates
    elapsed = current.get("time", 0) - previous.get("time", 0)
    if elapsed <= 0:
        return rates
    for name, now in current.get("queues", {}).items():
        before = previous.get("queues", {}).get(name, {})
        rates["queues"][name] = {
            key: (now[key] - before[key]) / elapsed
            for key in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
            if isinstance(now.get(key), int) and isinstance(before.get(key), int)
        }
    restarts_before = {p["name"]: p["restarts"] for p in previous.get("processes", [])}
    for process in current.get("processes", []):
        if process["name"] in restarts_before:
            rates["restarts"][process["name"]] = (
                process["restarts"] - restarts_before[process["name"]]) / elapsed
    return rates


def render(state: dict[str, Any], rates: dict[str, Any]) -> Group:
    processes = Table(title="processes", title_justify="left")
    for column in ("name", "kind", "pid", "state", "healthy", "restarts", "uptime"):
        processes.add_column(column)
    for p in state.get("processes", []):
        restart_rate = rates.get("restarts", {}).get(p["name"], 0.0)
        processes.add_row(
            p["name"], p["kind"], str(p["pid"] or "-"), _state_style(p["state"]),
            "yes" if p["healthy"] else "no",
            f"{p['restarts']}" + (f" (+{restart_rate:.1f}/s)" if restart_rate else ""),
            _duration(p.get("uptime")),
        )
    pools = Table(title="pools", title_justify="left")
    for column in ("pool", "desired", "min..max", "target", "state", "instance", "healthy"):
        pools.add_column(column)
    for name, pool in state.get("pools", {}).items():
        targets = pool.get("targets") or [{}]
        for position, target in enumerate(targets):
            first = position == 0
            pools.add_row(
                name if first else "", str(pool["desired"]) if first else "",
                f"{pool['min']}..{pool['max']}" if first else "",
                target.get("address", "-"), target.get("state", "-"),
                target.get("instance") or "-",
                {True: "yes", False: "no"}.get(target.get("healthy"), "-"),
            )
    queues = Table(title="queues", title_justify="left")
    for column in ("queue", "visible", "in flight", "delayed", "oldest", "backlog/s"):
        queues.add_column(column)
    for name, queue in state.get("queues", {}).items():
        if "error" in queue:
            queues.add_row(name, f"[red]{queue['error']}[/red]", "", "", "", "")
            continue
        rate = rates.get("queues", {}).get(name, {}).get("ApproximateNumberOfMessages")
        queues.add_row(
            name, str(queue.get("ApproximateNumberOfMessages", "-")),
            str(queue.get("ApproximateNumberOfMessagesNotVisible", "-")),
            str(queue.get("ApproximateNumberOfMessagesDelayed", "-")),
            _duration(queue.get("ApproximateAgeOfOldestMessage")),
            "-" if rate is None else f"{rate:+.1f}",
        )
    workers = Table(title="worker groups", title_justify="left")
    for column in ("group", "queue", "running/desired", "concurrency"):
        workers.add_column(column)
    for name, group in state.get("workers", {}).items():
        workers.add_row(name, group["queue"], f"{group['running']}/{group['desired']}",
                        str(group["concurrency"]))
    parts = [processes, pools, queues, workers]
    if _scaled_groups(state) or state.get("scaling_activity"):
        parts += [render_policies(state), render_activity(state)]
    return Group(*parts)


def _scaled_groups(state: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(kind, name, group["scaling"])
            for kind, key in (("pool", "pools"), ("worker", "workers"))
            for name, group in state.get(key, {}).items() if group.get("scaling")]


def render_policies(state: dict[str, Any]) -> Table:
    """Each target-tracking policy with its latest datapoint against its target."""
    table = Table(title="Scaling policies", title_justify="left")
    for column in ("group", "policy", "value", "target"):
        table.add_column(column)
    for kind, name, scaling in _scaled_groups(state):
        for policy, reading in scaling["policies"].items():
            value = reading.get("value")
            table.add_row(f"{kind} {name}", policy, "-" if value is None else f"{value:g}",
                          f"{reading['target']:g}")
    return table


def render_activity(state: dict[str, Any], limit: int = 10) -> Table:
    """The newest scaling activities, like an Auto Scaling group's activity history."""
    table = Table(title="Scaling activity", title_justify="left")
    for column in ("time", "group", "from → to", "cause"):
        table.add_column(column)
    for activity in state.get("scaling_activity", [])[:limit]:
        arrow = "[green]↑[/green]" if activity["direction"] == "out" else "[yellow]↓[/yellow]"
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(activity["time"])),
            f"{activity['kind']} {activity['group']}",
            f"{arrow} {activity['from_desired']} → {activity['to_desired']}",
            f"{activity['policy']} {activity['value']:g} "
            f"{'>' if activity['direction'] == 'out' else '<'} target {activity['target']:g}",
        )
    return table


def show_status(client: AdminClient, *, as_json: bool, watch: bool) -> int:
    try:
        return asyncio.run(_show_status(client, as_json=as_json, watch=watch))
    except KeyboardInterrupt:
        return 0


async def _show_status(client: AdminClient, *, as_json: bool, watch: bool) -> int:
    console = Console()
    try:
        if as_json and not watch:
            print(json.dumps(await client.get("/v1/state"), indent=2))
            return 0
        previous = await client.get("/v1/state")
        if not watch:
            await asyncio.sleep(RATE_INTERVAL)
            current = await client.get("/v1/state")
            console.print(render(current, compute_rates(previous, current)))
            return 0
        if as_json:
            while True:
                print(json.dumps(previous), flush=True)
                await asyncio.sleep(RATE_INTERVAL)
                previous = await client.get("/v1/state")
        if not console.is_terminal:  # piped: a fresh table per refresh, nothing redrawn
            while True:
                await asyncio.sleep(RATE_INTERVAL)
                current = await client.get("/v1/state")
                console.print(render(current, compute_rates(previous, current)))
                previous = current
        with Live(render(previous, {}), console=console, refresh_per_second=2) as live:
            while True:
                await asyncio.sleep(RATE_INTERVAL)
                current = await client.get("/v1/state")
                live.update(render(current, compute_rates(previous, current)))
                previous = current
    except BrokenPipeError:  # `surge status --watch | head`: the reader is done
        return 0
    except AdminCallError as exc:
        print(f"surge status: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()


def _state_style(state: str) -> str:
    colour = {"running": "green", "failed": "bold red", "backoff": "yellow",
              "starting": "cyan"}.get(state)
    return f"[{colour}]{state}[/{colour}]" if colour else state


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
