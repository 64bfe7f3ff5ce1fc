"""The typed settings of ``surge.toml``, one model per concern.

Every model forbids unknown keys, so a typo is an error that names the key. Cross-references
(a route naming a pool or a queue, a worker naming a queue) are checked in ``Settings``.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from surge.config.types import (
    ByteSize,
    Duration,
    HostPort,
    ListenAddress,
    StrictModel,
    is_loopback,
)


class AccessLogSettings(StrictModel):
    enabled: bool = True
    path: str = "-"  # "-" is standard output
    skip_paths: list[str] = ["/health"]


class GatewaySettings(StrictModel):
    listen: ListenAddress = HostPort("0.0.0.0", 8080)
    processes: int | Literal["auto"] = "auto"  # auto: enough for max_connections, ≥ 1 per core
    # (on two cores shared with a local app pool, 1 proxies to it faster: docs/benchmarks.md)
    max_connections: int = Field(60000, ge=1)  # across all processes
    backlog: int = Field(4096, ge=1)
    max_header_size: ByteSize = 8 * 1024  # request line + headers → 431 beyond (nginx: 8k)
    max_body_size: ByteSize = 1024 * 1024  # → 413 beyond (nginx client_max_body_size 1m)
    header_timeout: Duration = 60.0  # whole head → 408 (nginx client_header_timeout)
    body_timeout: Duration = 60.0  # between two reads of the body → 408 (client_body_timeout)
    # A body must also arrive at body_min_rate bytes/s on average once body_rate_grace has
    # passed: N bytes within body_rate_grace + N / body_min_rate seconds, else 408 (Apache's
    # RequestReadTimeout body=20,MinRate=500), so a trickle cannot stretch body_timeout
    # forever. 0: no minimum rate.
    body_min_rate: ByteSize = 500
    body_rate_grace: Duration = 20.0
    # Between two writes that the client took → close (nginx send_timeout), for every response.
    send_timeout: Duration = Field(60.0, gt=0)
    # Request bodies are read whole before a proxied request takes a target slot (nginx
    # proxy_request_buffering on): up to this in memory, the rest in a temporary file in
    # DATA_DIR/tmp. nginx's client_body_buffer_size is 8k|16k; 64k keeps the bodies of
    # ordinary API calls in memory, on the fast path (a 32 KiB body through a temp file cost
    # +18 µs of a ~25 µs request, docs/benchmarks.md), at 64 KiB per uploading connection.
    body_buffer_size: ByteSize = 64 * 1024
    # Proxied responses are read from the target as fast as it sends them (nginx
    # proxy_buffering on): up to this in memory, the rest in a temporary file…
    response_buffer_size: ByteSize = Field(64 * 1024, ge=1)  # (nginx proxy_buffers 8 × 4k|8k)
    # … of at most this; past it, the target waits for the client (the response streams).
    # 0: no temporary file (nginx proxy_max_temp_file_size 1024m).
    response_max_temp_file_size: ByteSize = 1024 * 1024 * 1024
    keepalive_timeout: Duration = 75.0  # idle keep-alive (nginx keepalive_timeout)
    shutdown_timeout: Duration = 30.0  # SIGTERM: finish in-flight requests up to this
    # Nice value of the gateway processes (nginx's worker_priority). On cores shared with
    # the app pool, a negative value keeps the one front process ahead of the many app
    # workers it feeds; below the current value needs root or CAP_SYS_NICE.
    priority: int = Field(0, ge=-20, le=19)
    access_log: AccessLogSettings = AccessLogSettings()


class HealthCheckSettings(StrictModel):
    """Active health checks with ALB's defaults."""

    path: str = "/"
    interval: Duration = 30.0
    timeout: Duration = 5.0
    healthy_threshold: int = Field(5, ge=1, le=10)
    unhealthy_threshold: int = Field(2, ge=1, le=10)
    # "200", "200,204", "200-299" (ALB's matcher)
    success_codes: str = Field("200", pattern=r"^\d{3}(-\d{3})?(,\d{3}(-\d{3})?)*$")


class InstanceCount(StrictModel):
    min: int = Field(1, ge=0)
    max: int = Field(4, ge=1)
    desired: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> InstanceCount:
        if not self.min <= self.desired <= self.max:
            raise ValueError(
                f"need min <= desired <= max, got min={self.min} desired={self.desired} "
                f"max={self.max}"
            )
        return self


class GaugePolicy(StrictModel):
    """Target tracking on a gauge read from a Prometheus text endpoint (a custom metric).

    Like an AWS custom metric for target tracking, the value must be an average per
    instance that falls as instances are added: the sum of the gauge's samples is used."""

    target: float = Field(gt=0)
    url: str = Field(pattern=r"^https?://")  # "http://127.0.0.1:9100/metrics"


class ScalingSettings(StrictModel):
    """Target tracking with AWS's semantics: see surge.autoscale. At least one policy.

    A datapoint is taken every ``period``; scale out once ``evaluation_periods`` datapoints
    in a row are over target, scale in once ``scale_in_evaluation_periods`` in a row are
    under target by ``scale_in_margin`` (AWS: 3 × 1 min over, 15 × 1 min under 90 %)."""

    cpu: float | None = Field(None, gt=0, le=100)  # average CPU utilization %, e.g. 70
    gauges: dict[str, GaugePolicy] = {}
    period: Duration = Field(10.0, ge=1)
    evaluation_periods: int = Field(3, ge=1, le=100)
    scale_in_evaluation_periods: int = Field(15, ge=1, le=1000)
    scale_in_margin: float = Field(0.1, ge=0, lt=1)
    instance_warmup: Duration = 30.0
    scale_out_cooldown: Duration = 30.0
    scale_in_cooldown: Duration = 120.0
    disable_scale_in: bool = False

    def policy_targets(self) -> dict[str, float]:
        """Policy name → target value, for every policy that is set."""
        targets = {name: getattr(self, name) for name in self._metric_keys()}
        targets.update({f"gauge:{name}": gauge.target for name, gauge in self.gauges.items()})
        return {name: value for name, value in targets.items() if value is not None}

    def _metric_keys(self) -> tuple[str, ...]:
        return ("cpu",)

    @model_validator(mode="after")
    def _has_a_policy(self) -> ScalingSettings:
        if not self.policy_targets():
            raise ValueError(f"a scaling table needs at least one policy: "
                             f"{', '.join(self._metric_keys())} or gauges")
        return self


class PoolScalingSettings(ScalingSettings):
    requests_per_target: float | None = Field(None, gt=0)  # per minute (ALBRequestCountPerTarget)

    def _metric_keys(self) -> tuple[str, ...]:
        return ("cpu", "requests_per_target")


class WorkerScalingSettings(ScalingSettings):
    backlog_per_worker: float | None = Field(None, gt=0)  # visible messages ÷ running workers

    def _metric_keys(self) -> tuple[str, ...]:
        return ("cpu", "backlog_per_worker")


class InstanceRefreshSettings(StrictModel):
    """How ``surge reload`` replaces a pool's instances when their launch settings change
    (an Auto Scaling group's instance refresh). Percentages of the desired size: at least
    ``min_healthy_percentage`` stays healthy, at most ``max_healthy_percentage`` is in
    service or starting. The defaults launch one new instance, wait until it is healthy,
    drain one old one, and so on: no capacity lost, little added."""

    min_healthy_percentage: int = Field(100, ge=0, le=100)
    max_healthy_percentage: int = Field(110, ge=100, le=200)

    @model_validator(mode="after")
    def _room_to_move(self) -> InstanceRefreshSettings:
        if self.max_healthy_percentage - self.min_healthy_percentage > 100:
            raise ValueError(f"max_healthy_percentage may exceed min_healthy_percentage by "
                             f"100 at most, got min {self.min_healthy_percentage} and max "
                             f"{self.max_healthy_percentage}")
        return self


class PoolSettings(StrictModel):
    """App server instances: any HTTP server started from ``command``."""

    command: str = ""  # template with {port} and {workers}: "starman --listen 127.0.0.1:{port} …"
    workers: int = Field(4, ge=1)  # {workers}, and the default per-target concurrency limit
    directory: str | None = None  # working directory of the instances (relative to the config)
    env: dict[str, str] = {}
    host: str = "127.0.0.1"
    base_port: int = Field(0, ge=0, le=65535)  # 0: pick free ports
    instances: InstanceCount = InstanceCount()
    balancing: Literal["round_robin", "least_outstanding"] = "least_outstanding"
    max_concurrency_per_target: int | None = Field(None, ge=1)  # default: workers
    max_queued_requests: int = Field(10000, ge=0)  # waiting at the gateway for a free slot
    queue_timeout: Duration = 30.0  # waited longer → 503 + Retry-After
    connect_timeout: Duration = 10.0  # → 502
    read_timeout: Duration = 180.0  # → 504 (the seed's proxy_read_timeout)
    keepalive_per_target: int = Field(64, ge=0)
    deregistration_delay: Duration = 30.0  # drain in-flight requests before removal
    start_timeout: Duration = 60.0  # an instance must pass its health check within this
    health_check: HealthCheckSettings = HealthCheckSettings()
    targets: list[str] = []  # fixed HOST:PORT targets (no command started): external servers
    scaling: PoolScalingSettings | None = None  # None: the pool keeps the size it is given
    instance_refresh: InstanceRefreshSettings = InstanceRefreshSettings()
    # "nytprof": a Perl command runs under Devel::NYTProf, each process writing
    # data_dir/profiles/<pool>/nytprof.out.<pid> as it exits (`surge profile <pool>`)
    profile: Literal["nytprof"] | None = None

    @model_validator(mode="after")
    def _command_has_port(self) -> PoolSettings:
        if self.command and "{port}" not in self.command:
            raise ValueError(f"command must contain '{{port}}', got {self.command!r}")
        if not self.command and not self.targets:
            raise ValueError("a pool needs a 'command' to start instances, or fixed 'targets'")
        if self.scaling is not None and not self.command:
            raise ValueError("a pool with fixed 'targets' and no 'command' cannot autoscale: "
                             "remove its 'scaling' table")
        return self


class ProxyRoute(StrictModel):
    pool: str
    # false: the body streams to the target as it arrives, holding a target slot meanwhile
    # (nginx proxy_request_buffering off), for uploads the app must see as they come.
    request_buffering: bool = True
    # false: the response streams to the client, holding the target until the client has
    # read it (nginx proxy_buffering off), for responses that must reach it as they come.
    response_buffering: bool = True


class EnqueueRoute(StrictModel):
    queue: str
    task: str
    max_body_size: ByteSize = 256 * 1024  # the payload must fit one SQS message
    # How long an Idempotency-Key names its task (Stripe keeps keys 24 h); at most
    # result_backend.ttl, so a key never outlives the record it points to.
    idempotency_key_ttl: Duration = 86400.0


class StaticRoute(StrictModel):
    root: str  # directory (relative to the config file)
    expires: Duration | None = 30 * 86400.0  # the seed's 30 days; None: no Expires header
    index: str | None = "index.html"


class RouteSettings(StrictModel):
    """First match wins, by method and path prefix. Exactly one of proxy/enqueue/static."""

    prefix: str = "/"
    methods: list[str] = []  # empty: any method but TRACE (name it here to allow it)
    proxy: ProxyRoute | None = None
    enqueue: EnqueueRoute | None = None
    static: StaticRoute | None = None

    @model_validator(mode="after")
    def _one_action(self) -> RouteSettings:
        actions = [a for a in ("proxy", "enqueue", "static") if getattr(self, a) is not None]
        if len(actions) != 1:
            raise ValueError(
                f"a route needs exactly one of 'proxy', 'enqueue' or 'static', got {actions}"
            )
        if not self.prefix.startswith("/"):
            raise ValueError(f"prefix must start with '/', got {self.prefix!r}")
        return self


class QueueSettings(StrictModel):
    """A queue created on the backend at start-up (SQS attributes in config form)."""

    fifo: bool = False
    visibility_timeout: Duration = 30.0
    retention: Duration = 4 * 86400.0
    delay: Duration = 0.0
    receive_wait: Duration = 0.0
    max_message_size: ByteSize = 256 * 1024
    max_receive_count: int | None = Field(5, ge=1, le=1000)  # None: no dead-letter queue
    dead_letter_queue: str | None = None  # default: "<name>-dlq" when max_receive_count is set
    content_based_deduplication: bool = False


class CommandHandler(StrictModel):
    """A task handler in any language: payload JSON on stdin, result JSON on stdout."""

    command: str
    mode: Literal["per-task", "persistent"] = "per-task"
    processes: int = Field(1, ge=1)  # persistent mode: how many long-running processes
    directory: str | None = None
    env: dict[str, str] = {}
    permanent_failure_exit_code: int | None = 100  # straight to the dead-letter queue
    # "nytprof": a Perl command runs under Devel::NYTProf, each process writing
    # data_dir/profiles/<task>/nytprof.out.<pid> as it exits (`surge profile <task>`)
    profile: Literal["nytprof"] | None = None


class PythonHandler(StrictModel):
    function: str  # "package.module:function", sync or async
    executor: Literal["thread", "process", "inline"] = "thread"


MAX_WORKER_PROCESSES = 64  # manual scaling bound of a group without ``instances``


class WorkerSettings(StrictModel):
    queue: str
    handlers: dict[str, str | PythonHandler | CommandHandler]  # task name → handler
    processes: int = Field(1, ge=1)  # with ``instances``: set from instances.desired
    # min/max/desired processes under `surge up` (the pools' equivalent); either this or
    # `processes`, so there is one source for the starting size.
    instances: InstanceCount | None = None
    scaling: WorkerScalingSettings | None = None
    concurrency: int = Field(8, ge=1)  # in-flight tasks per process
    wait_time: Duration = Field(20.0, le=20)  # long poll
    visibility_timeout: Duration | None = None  # default: the queue's
    max_run_time: Duration = 900.0  # heartbeat extends visibility up to this, then cancel
    backoff_base: Duration = 1.0
    backoff_max: Duration = 300.0
    shutdown_timeout: Duration = 30.0
    python_path: list[str] = []  # added to sys.path (relative to the config file)

    @model_validator(mode="before")
    @classmethod
    def _processes_from_instances(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("instances") is None:
            return data
        if "processes" in data:
            raise ValueError("set either 'processes' or 'instances' (min/max/desired), not both")
        instances = data["instances"]
        desired = instances.get("desired", 1) if isinstance(instances, dict) else \
            getattr(instances, "desired", 1)
        # processes ≥ 1 (a standalone `surge worker` runs that many); desired 0 is valid
        # under `surge up`, which sizes the group from `instances` itself.
        return {**data, "processes": max(1, desired) if isinstance(desired, int) else desired}

    @model_validator(mode="after")
    def _scaling_needs_bounds(self) -> WorkerSettings:
        if self.scaling is not None and self.instances is None:
            raise ValueError("a worker group with a 'scaling' table needs 'instances' "
                             "= { min = …, max = …, desired = … } instead of 'processes'")
        return self

    def process_count(self) -> InstanceCount:
        """Bounds and starting size of the group under ``surge up``."""
        if self.instances is not None:
            return self.instances
        return InstanceCount(min=0, max=max(MAX_WORKER_PROCESSES, self.processes),
                             desired=self.processes)


class AccessKey(StrictModel):
    """An access key of the embedded queue server: with any configured, every request must
    carry a valid SigV4 signature by one of them, and surge's own clients sign with the
    first. The secret comes from the file (``secret``) or, better, from an environment
    variable (``secret_env``), so the file can be shared without it."""

    id: str = Field(pattern=r"^[A-Za-z0-9_+=,.@-]{1,128}$")
    secret: SecretStr | None = None
    secret_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _one_secret(self) -> AccessKey:
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("give the key's secret as exactly one of secret = \"…\" or "
                             "secret_env = \"VARIABLE\"")
        if self.secret is not None and len(self.secret.get_secret_value()) < 8:
            raise ValueError("the secret is too short (at least 8 characters)")
        if self.secret_env is not None and not os.environ.get(self.secret_env):
            raise ValueError(f"the environment variable {self.secret_env} (secret_env of key "
                             f"{self.id!r}) is not set or empty")
        return self

    def secret_value(self) -> str:
        if self.secret is not None:
            return self.secret.get_secret_value()
        assert self.secret_env is not None
        return os.environ[self.secret_env]


class QueueBackendSettings(StrictModel):
    """``embedded`` (the built-in queue server), ``sqs://REGION`` or an http(s) SQS endpoint,
    or ``redis://host:port/db``."""

    url: str = "embedded"
    listen: ListenAddress = HostPort("127.0.0.1", 9324)  # the embedded server's address
    # The scheme, host and port of the queue URLs the embedded server hands out (ElasticMQ's
    # node-address), when clients reach it by another name than its listen address (a
    # proxy, a DNS name, 0.0.0.0). Empty: http://LISTEN_HOST:PORT.
    public_url: str = Field("", pattern=r"^(https?://[^/?#\s]+)?$")
    # Embedded server: none → unsigned local use, any request is accepted; otherwise every
    # request must be signed (SigV4) with one of these.
    access_keys: list[AccessKey] = []
    # Embedded server: disk space held back (DATA_DIR/queue.reserve) so that receives and
    # deletes go on once the disk is full, while sends are refused (503). 0: none.
    disk_reserve: ByteSize = 8 * 1024 * 1024
    account_id: str = "000000000000"
    region: str = "us-east-1"

    @field_validator("access_keys", mode="before")
    @classmethod
    def _keys_have_secrets(cls, value: Any) -> Any:
        if isinstance(value, list):
            for index, key in enumerate(value):
                if isinstance(key, str):
                    raise ValueError(
                        f"[{index}] {key!r}: an access key needs its secret now that "
                        f"signatures are verified: {{ id = {key!r}, secret_env = "
                        f"\"SURGE_QUEUE_SECRET\" }} (or secret = \"…\")")
        return value

    def signing_key(self) -> AccessKey | None:
        """The key surge's own clients sign with (the first), if any."""
        return self.access_keys[0] if self.access_keys else None


class ResultBackendSettings(StrictModel):
    url: str = "embedded"  # SQLite in the data directory, or redis://
    ttl: Duration = 7 * 86400.0


class AdminSettings(StrictModel):
    # Declared before ``listen`` so the check of ``listen`` can see it.
    # The admin API speaks plain HTTP: its bearer token would cross the network in clear
    # text. Off loopback it must sit behind a TLS terminator (or an SSH tunnel), and saying
    # so takes this key, whose name says the risk.
    allow_remote_without_tls: bool = False
    listen: ListenAddress = HostPort("127.0.0.1", 8081)

    @field_validator("listen")
    @classmethod
    def _loopback_unless_allowed(cls, listen: HostPort, info: ValidationInfo) -> HostPort:
        if not is_loopback(listen.host) and not info.data.get("allow_remote_without_tls"):
            raise ValueError(
                "reachable from the network, and the admin API has no TLS: its token would "
                "cross the network in clear text. Listen on 127.0.0.1 (behind a TLS proxy or "
                "an SSH tunnel), or set admin.allow_remote_without_tls = true to accept that "
                "risk")
        return listen


class SupervisorSettings(StrictModel):
    restart_backoff_base: Duration = 0.5
    restart_backoff_max: Duration = 30.0
    max_fast_crashes: int = Field(5, ge=1)  # crashes within fast_crash_window → give up loudly
    fast_crash_window: Duration = 60.0
    liveness_interval: Duration = 5.0
    liveness_timeout: Duration = 20.0
    shutdown_timeout: Duration = 40.0


class Settings(StrictModel):
    data_dir: str = ".surge"
    gateway: GatewaySettings = GatewaySettings()
    admin: AdminSettings = AdminSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    queue_backend: QueueBackendSettings = QueueBackendSettings()
    result_backend: ResultBackendSettings = ResultBackendSettings()
    routes: list[RouteSettings] = []
    pools: dict[str, PoolSettings] = {}
    queues: dict[str, QueueSettings] = {}
    workers: dict[str, WorkerSettings] = {}
    config_dir: str = "."  # set by the loader: relative paths resolve against it

    @model_validator(mode="after")
    def _references_exist(self) -> Settings:
        problems: list[str] = []
        for index, route in enumerate(self.routes):
            if route.proxy and route.proxy.pool not in self.pools:
                problems.append(
                    f"routes[{index}].proxy.pool: unknown pool {route.proxy.pool!r}; "
                    f"defined pools: {sorted(self.pools)}"
                )
            if route.enqueue and route.enqueue.queue not in self.queues:
                problems.append(
                    f"routes[{index}].enqueue.queue: unknown queue {route.enqueue.queue!r}; "
                    f"defined queues: {sorted(self.queues)}"
                )
            if route.enqueue and not 0 < route.enqueue.idempotency_key_ttl \
                    <= self.result_backend.ttl:
                problems.append(
                    f"routes[{index}].enqueue.idempotency_key_ttl: expected more than 0 and "
                    f"at most result_backend.ttl ({self.result_backend.ttl:g}s; a key must "
                    f"not outlive its task's record), got {route.enqueue.idempotency_key_ttl:g}s"
                )
        for name, worker in self.workers.items():
            if worker.queue not in self.queues:
                problems.append(
                    f"workers.{name}.queue: unknown queue {worker.queue!r}; "
                    f"defined queues: {sorted(self.queues)}"
                )
        problems += self._access_log_problems()
        problems += self._profile_problems()
        if problems:
            raise ValueError("\n".join(problems))  # the loader reports one line each
        return self

    def _profile_problems(self) -> list[str]:
        # Imported here: the profiling module reads these settings.
        from surge.profiling.nytprof import profile_problems

        return profile_problems(self)

    def _access_log_problems(self) -> list[str]:
        # The supervisor counts requests per target from the gateways' access log lines it
        # relays: without them the requests_per_target policy would never see a datapoint.
        log = self.gateway.access_log
        if log.enabled and log.path == "-":
            return []
        return [f"pools.{name}.scaling.requests_per_target: needs the gateway access log on "
                f"standard output (gateway.access_log enabled = true, path = \"-\"), got "
                f"enabled = {log.enabled}, path = {log.path!r}"
                for name, pool in self.pools.items()
                if pool.scaling is not None and pool.scaling.requests_per_target is not None]
