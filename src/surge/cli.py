"""The ``surge`` command. Thin: each command validates its options and calls a library function."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from surge.config.loader import load_settings
from surge.config.settings import Settings
from surge.errors import ConfigError

CONFIG_OPTION = click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="surge.toml to use (default: the embedded Python example).",
)


def _settings(config_path: str | None, overrides: dict[str, Any]) -> Settings:
    try:
        return load_settings(config_path, {k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        click.echo("surge: invalid configuration:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(2)


@click.group()
@click.version_option(package_name="surge")
def main() -> None:
    """surge: a gateway, app pools, a durable queue and workers in one command."""


@main.command()
@CONFIG_OPTION
@click.option("--listen", help="Gateway HOST:PORT (overrides gateway.listen).")
@click.option("--admin", "admin_listen", help="Admin API HOST:PORT (overrides admin.listen).")
@click.option("--queue-listen", help="Embedded queue server HOST:PORT.")
@click.option("--data-dir", help="Where the queue and results are stored.")
@click.option("--pid", "pid_file", type=click.Path(dir_okay=False), help="Write the PID here.")
@click.option("--user", help="Run children as this user.")
@click.option("--group", help="Run children as this group.")
def up(config_path: str | None, listen: str | None, admin_listen: str | None,
       queue_listen: str | None, data_dir: str | None, pid_file: str | None,
       user: str | None, group: str | None) -> None:
    """Run the whole architecture on this machine."""
    from surge.supervisor.up import run_up

    settings = _settings(config_path, {
        "gateway.listen": listen, "admin.listen": admin_listen,
        "queue_backend.listen": queue_listen, "data_dir": data_dir,
    })
    sys.exit(run_up(settings, config_path=config_path, pid_file=pid_file, user=user, group=group))


@main.group()
def queue() -> None:
    """The embedded SQS-compatible queue server."""


@queue.command("serve")
@CONFIG_OPTION
@click.option("--listen", help="HOST:PORT (overrides queue_backend.listen).")
@click.option("--data-dir", help="Where the SQLite database lives.")
def queue_serve(config_path: str | None, listen: str | None, data_dir: str | None) -> None:
    """Serve the SQS API from an SQLite database."""
    from surge.queue.server.main import serve

    settings = _settings(config_path, {"queue_backend.listen": listen, "data_dir": data_dir})
    serve(settings)


@main.command()
@CONFIG_OPTION
@click.option("--listen", help="HOST:PORT (overrides gateway.listen).")
@click.option("--processes", type=int, help="Gateway processes (overrides gateway.processes).")
@click.option("--queue-listen", help="Queue server HOST:PORT the enqueue routes send to.")
@click.option("--data-dir", help="Where the result store lives.")
@click.option("--targets-from", help="Admin API URL to follow for pool targets.")
def gateway(config_path: str | None, listen: str | None, processes: int | None,
            queue_listen: str | None, data_dir: str | None, targets_from: str | None) -> None:
    """Run the gateway alone."""
    from surge.gateway.main import run_gateway

    settings = _settings(config_path, {
        "gateway.listen": listen, "gateway.processes": processes,
        "queue_backend.listen": queue_listen, "data_dir": data_dir,
    })
    sys.exit(run_gateway(settings, targets_from=targets_from))


@main.command()
@CONFIG_OPTION
@click.argument("group", required=False)
@click.option("--queue-listen", help="Queue server HOST:PORT.")
@click.option("--data-dir", help="Where the result store lives.")
def worker(config_path: str | None, group: str | None, queue_listen: str | None,
           data_dir: str | None) -> None:
    """Run one worker group (the only one when GROUP is omitted)."""
    from surge.worker.main import run_worker_group

    settings = _settings(config_path, {"queue_backend.listen": queue_listen, "data_dir": data_dir})
    sys.exit(run_worker_group(settings, group))


def _admin_options(command: Any) -> Any:
    """--admin and --data-dir: where a running `surge up` is, and where its token lives."""
    command = click.option(
        "--data-dir", default=".surge", show_default=True,
        help="That surge up's data directory; its admin.token is read from there "
             "(SURGE_ADMIN_TOKEN, if set, is used instead).")(command)
    return click.option(
        "--admin", default="127.0.0.1:8081", show_default=True,
        help="Its admin API: HOST:PORT, as surge up --admin takes it, or a URL.")(command)


def _admin_client(admin: str, data_dir: str) -> Any:
    from surge.admin_token import AdminTokenError
    from surge.supervisor.admin_client import AdminClient

    try:
        return AdminClient.for_cli(admin, data_dir)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--admin") from None
    except AdminTokenError as exc:
        click.echo(f"surge: {exc}", err=True)
        sys.exit(2)


@main.command()
@_admin_options
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON state.")
@click.option("--watch", is_flag=True, help="Refresh every second.")
def status(admin: str, data_dir: str, as_json: bool, watch: bool) -> None:
    """A table of every process, pool, target, queue and worker group."""
    from surge.supervisor.status import show_status

    sys.exit(show_status(_admin_client(admin, data_dir), as_json=as_json, watch=watch))


@main.command()
@_admin_options
def reload(admin: str, data_dir: str) -> None:
    """Make a running surge up reread its config and apply it, showing each step.

    Pools whose command or workers changed get new instances, which take traffic once
    healthy, before the old ones drain and stop; exits 1 if the new config is invalid or
    a new instance never turns healthy (that pool is then rolled back)."""
    from surge.supervisor.reload_follow import run_reload

    sys.exit(run_reload(_admin_client(admin, data_dir)))


@main.command()
@_admin_options
@click.argument("name")
@click.option("--seconds", type=click.IntRange(1, 3600), default=None,
              help="How long py-spy samples.  [default: 10]")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Where to write: a file for py-spy [NAME-profile.svg], a directory for an "
                   "NYTProf report [NAME-nytprof].")
@click.option("--format", "output_format", type=click.Choice(["svg", "speedscope"]),
              default=None, help="A flame graph (SVG) or a speedscope file.  [default: svg]")
@click.option("--rate", type=click.IntRange(1, 1000), default=None,
              help="Samples per second.  [default: 100]")
@click.option("--subprocesses", is_flag=True, help="Sample its child processes too.")
@click.option("--idle", is_flag=True, help="Sample waiting threads too (an idle event loop).")
def profile(admin: str, data_dir: str, name: str, seconds: int | None, out: Path | None,
            output_format: str | None, rate: int | None, subprocesses: bool,
            idle: bool) -> None:
    """Profile NAME: a running Python process as `surge status` names it (gateway-1,
    worker-images-1, queue…), sampled with py-spy into a flame graph; or a Perl pool or task
    with profile = "nytprof" in its settings, whose NYTProf profiles are rendered with
    nytprofhtml. py-spy needs ptrace: run as root, or see docs/profiling.md."""
    from surge.profiling import ProfileError
    from surge.profiling.run import ProfileRequest, run_profile

    request = ProfileRequest(name=name, data_dir=data_dir, seconds=seconds, out=out,
                             format=output_format, rate=rate, subprocesses=subprocesses,
                             idle=idle)
    try:
        sys.exit(run_profile(request, lambda: _admin_client(admin, data_dir)))
    except ProfileError as exc:
        click.echo(f"surge profile: {exc}", err=True)
        sys.exit(1)


@main.command("check-config")
@CONFIG_OPTION
def check_config(config_path: str | None) -> None:
    """Validate a config file and explain what it will run."""
    from surge.config.explain import describe

    settings = _settings(config_path, {})
    click.echo(describe(settings))
    click.echo("configuration OK")


@main.command()
@CONFIG_OPTION
@click.option("--profile", required=True,
              help="Load over time as TIME:LOAD points, e.g. '0:0, 10m:50k, 20m:50k, 22m:0' "
                   "(clients for a pool, tasks/s for a worker group).")
@click.option("--pool", help="Pool to simulate (default: the first group with scaling).")
@click.option("--workers", "worker_group", help="Worker group to simulate instead.")
@click.option("--capacity", type=float, default=None,
              help="Requests/s one instance serves at 100 % CPU [pool: 500], or tasks/s one "
                   "worker finishes [workers: 10].")
@click.option("--service-time", default="50ms", show_default=True,
              help="Time to serve one request when nothing queues.")
@click.option("--think-time", default="1s", show_default=True,
              help="Time a client waits between an answer and its next request.")
@click.option("--boot-time", default="30s", show_default=True,
              help="From start to healthy: when a new instance begins to serve.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="surge-simulation.svg",
              show_default=True, help="SVG chart of load, instances and latency.")
def simulate(config_path: str | None, profile: str, pool: str | None,
             worker_group: str | None, capacity: float | None, service_time: str,
             think_time: str, boot_time: str, output: str) -> None:
    """Replay a load profile against the configured scaling policies; chart the fleet."""
    from pathlib import Path

    from surge.config.types import parse_duration
    from surge.simulate.profile import ProfileError, parse_profile
    from surge.simulate.report import SimulationRequest, run_simulation

    if pool and worker_group:
        raise click.UsageError("give --pool or --workers, not both")
    settings = _settings(config_path, {})
    try:
        durations = {name: parse_duration(value) for name, value in
                     (("--service-time", service_time), ("--think-time", think_time),
                      ("--boot-time", boot_time))}
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        load = parse_profile(profile)
    except ProfileError as exc:
        raise click.BadParameter(str(exc), param_hint="--profile") from None
    if capacity is not None and capacity <= 0:
        raise click.BadParameter(f"must be > 0, got {capacity:g}", param_hint="--capacity")
    request = SimulationRequest(
        profile=load, pool=pool, workers=worker_group,
        capacity=capacity or (10.0 if worker_group else 500.0),
        service_time=durations["--service-time"], think_time=durations["--think-time"],
        boot_time=durations["--boot-time"], output=Path(output))
    try:
        run_simulation(settings, request)
    except ConfigError as exc:
        click.echo(f"surge simulate: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
