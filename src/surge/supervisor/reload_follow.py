"""``surge reload``: ask a running ``surge up`` to reread its config (``POST /v1/reload``),
follow the reload's steps (``GET /v1/reload?id=N``) as they happen, and exit 0 only if it
succeeded: 1 if the new config was rejected, or a pool's new instances failed and were
rolled back."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from rich.console import Console
from rich.markup import escape

from surge.supervisor.admin_client import AdminCallError, AdminClient

POLL_INTERVAL = 0.25
FINAL_STATES = ("succeeded", "failed", "rejected")
_STYLES = {"warning": "yellow", "error": "bold red"}


def run_reload(client: AdminClient, console: Console | None = None) -> int:
    try:
        return asyncio.run(follow_reload(client, console or Console()))
    except KeyboardInterrupt:
        print("surge reload: no longer following; the reload goes on (GET /v1/reload)",
              file=sys.stderr)
        return 130


async def follow_reload(client: AdminClient, console: Console) -> int:
    try:
        report = await client.post("/v1/reload", {})
        reload_id = report["id"]
        console.print(f"reload {reload_id} of {client.base_url} ({report['state']})")
        shown = 0
        with console.status(f"reload {reload_id}: rereading the configuration") as status:
            while True:
                report = await client.get(f"/v1/reload?id={reload_id}")
                for step in report["steps"][shown:]:
                    console.print(_step_line(step))
                    status.update(f"reload {reload_id}: {escape(step['message'])}")
                shown = len(report["steps"])
                if report["state"] in FINAL_STATES:
                    break
                await asyncio.sleep(POLL_INTERVAL)
    except AdminCallError as exc:
        console.print(f"[bold red]surge reload: {escape(str(exc))}[/bold red]")
        return 1
    finally:
        await client.close()
    return _outcome(report, console)


def _step_line(step: dict[str, Any]) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(step["time"]))
    style = _STYLES.get(step["level"])
    message = escape(step["message"])
    return f"{clock}  [{style}]{message}[/{style}]" if style else f"{clock}  {message}"


def _outcome(report: dict[str, Any], console: Console) -> int:
    took = (report["finished"] or time.time()) - report["started"]
    if report["state"] == "succeeded":
        console.print(f"[green]reload {report['id']} succeeded[/green] in {took:.1f}s")
        return 0
    what = ("the new configuration is invalid; surge up runs the old one"
            if report["state"] == "rejected" else f"reload {report['id']} failed")
    console.print(f"[bold red]{what}[/bold red]")
    for problem in report["problems"]:
        console.print(f"  {escape(problem)}")
    return 1
