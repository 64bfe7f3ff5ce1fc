"""What to run for each child of ``surge up``: command line, directory, environment and
how its liveness is checked. Pure: built from the settings, nothing is started here.

Children load the same settings as the supervisor: the same config file (absolute path)
or, without one, the embedded default; the values ``surge up`` may override (addresses,
data directory) are always passed as flags, so every child agrees on them.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from surge.admin_token import ADMIN_TOKEN_ENV
from surge.config.settings import PoolSettings, Settings
from surge.config.types import HostPort
from surge.liveness import HEARTBEAT_FILE_ENV
from surge.profiling.nytprof import NYTPROF, nytprof_environment, profile_dir
from surge.supervisor.policy import Kind


@dataclass(frozen=True, slots=True)
class HttpProbe:
    """Liveness: ``GET path`` on host:port answers (any status below 500)."""

    host: str
    port: int
    path: str
    success_codes: str = "200-499"


@dataclass(frozen=True, slots=True)
class HeartbeatProbe:
    """Liveness: the child touches this file every second."""

    path: str


Probe = HttpProbe | HeartbeatProbe | None


@dataclass(frozen=True, slots=True)
class ChildSpec:
    name: str  # unique, used in logs: "queue", "gateway-1", "web-2", "worker-images-1"
    kind: Kind
    group: str  # pool or worker group name; the kind for singletons
    index: int
    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str] = field(default_factory=dict)
    probe: Probe = None
    address: str | None = None  # pool instances: the target address "host:port"
    # Ready only once the child printed {"event": READY_EVENT, …} on stdout. The gateway
    # needs it: its port is shared (SO_REUSEPORT), so a probe of the port may be answered by
    # a sibling and says nothing about this process.
    ready_event: str | None = None


@dataclass(frozen=True, slots=True)
class LaunchContext:
    """Facts fixed for the life of ``surge up``, resolved once."""

    config_path: str | None  # absolute, or None for the embedded default
    data_dir: str  # absolute
    queue_listen: HostPort  # resolved (never port 0)
    admin_url: str  # "http://127.0.0.1:PORT"
    python: str = sys.executable
    admin_token: str = field(default="", repr=False)  # handed to the gateways, in env only

    def surge(self, command: str, *flags: str) -> tuple[str, ...]:
        """``python -m surge.cli COMMAND [-c CONFIG] FLAGS``; COMMAND may be two words."""
        config = ("-c", self.config_path) if self.config_path else ()
        return (self.python, "-m", "surge.cli", *command.split(), *config, *flags)


def connectable(address: HostPort) -> HostPort:
    """Where to connect to reach a server listening on ``address`` (0.0.0.0 → loopback)."""
    if address.host in ("0.0.0.0", "", "::"):
        return HostPort("127.0.0.1", address.port)
    return address


def heartbeat_path(data_dir: str, name: str) -> str:
    return str(Path(data_dir) / "run" / f"{name}.alive")


def resolve_dir(config_dir: str, directory: str | None) -> str:
    base = Path(config_dir)
    return str((base / directory).resolve() if directory else base.resolve())


def queue_server_spec(ctx: LaunchContext, settings: Settings) -> ChildSpec:
    queue_flags = ("--listen", str(ctx.queue_listen), "--data-dir", ctx.data_dir)
    return ChildSpec(
        name="queue", kind=Kind.QUEUE, group="queue", index=1,
        argv=ctx.surge("queue serve", *queue_flags),
        cwd=settings.config_dir,
        probe=HttpProbe(*connectable(ctx.queue_listen), "/_surge/ping", "200-299"),
    )


def gateway_spec(ctx: LaunchContext, settings: Settings, index: int) -> ChildSpec:
    listen = settings.gateway.listen
    argv = ctx.surge(
        "gateway", "--listen", str(listen), "--processes", "1",
        "--queue-listen", str(ctx.queue_listen), "--data-dir", ctx.data_dir,
        "--targets-from", ctx.admin_url,
    )
    # Liveness by heartbeat file, not by probing the port: the port is shared by every
    # gateway (SO_REUSEPORT), so a sibling could answer for a hung one.
    name = f"gateway-{index}"
    return ChildSpec(
        name=name, kind=Kind.GATEWAY, group="gateway", index=index, argv=argv,
        cwd=settings.config_dir,
        # The targets feed needs the admin token: in the environment, not in argv, which
        # every user of the machine can read in `ps`.
        env={HEARTBEAT_FILE_ENV: heartbeat_path(ctx.data_dir, name),
             ADMIN_TOKEN_ENV: ctx.admin_token},
        probe=HeartbeatProbe(heartbeat_path(ctx.data_dir, name)),
        ready_event="listening",
    )


def worker_spec(ctx: LaunchContext, settings: Settings, group: str, index: int) -> ChildSpec:
    name = f"worker-{group}-{index}"
    argv = ctx.surge(
        "worker", "--queue-listen", str(ctx.queue_listen), "--data-dir", ctx.data_dir, group,
    )
    return ChildSpec(
        name=name, kind=Kind.WORKER, group=group, index=index, argv=argv,
        cwd=settings.config_dir,
        env={HEARTBEAT_FILE_ENV: heartbeat_path(ctx.data_dir, name)},
        probe=HeartbeatProbe(heartbeat_path(ctx.data_dir, name)),
    )


def pool_instance_spec(
    settings: Settings, pool_name: str, pool: PoolSettings, index: int, port: int
) -> ChildSpec:
    command = pool.command.format(port=port, workers=pool.workers)
    env = {**pool.env, "PORT": str(port)}
    if pool.profile == NYTPROF:  # its directory is made by the supervisor at launch
        env.update(nytprof_environment(profile_dir(settings.data_dir, pool_name), env,
                                       os.environ))
    return ChildSpec(
        name=f"{pool_name}-{index}", kind=Kind.POOL, group=pool_name, index=index,
        argv=tuple(shlex.split(command)),
        cwd=resolve_dir(settings.config_dir, pool.directory),
        env=env,
        probe=HttpProbe(pool.host, port, pool.health_check.path, pool.health_check.success_codes),
        address=f"{pool.host}:{port}",
    )


def child_environment(spec: ChildSpec, base: dict[str, str] | None = None) -> dict[str, str]:
    """The inherited environment, the spec's additions, and the virtualenv's ``bin`` first on
    PATH so pool commands such as ``granian`` resolve to the one installed with surge."""
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join(p for p in (bin_dir, path) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["SURGE_PROCESS_NAME"] = spec.name
    # An operator's SURGE_ADMIN_TOKEN (for the CLI) reaches no app or worker; a gateway
    # gets the token through its spec.
    env.pop(ADMIN_TOKEN_ENV, None)
    env.update(spec.env)
    return env


def status_matches(status: int, success_codes: str) -> bool:
    """ALB-style matcher: ``"200"``, ``"200,204"`` or ``"200-299"``."""
    for part in success_codes.split(","):
        low, _, high = part.strip().partition("-")
        if low.isdigit() and int(low) <= status <= int(high or low):
            return True
    return False
