"""Typed settings per process, read from ``SLUICE_*`` environment variables (pydantic-settings).

Each process builds the settings it needs once, at its start, and passes them down:

    SharedSettings                what the API and the workers both read (Redis, TTLs, the
    │                             registry, logs, limits both sides enforce, the bind host)
    ├── ApiSettings               + the API's (auth, quotas, pools, gunicorn's port and processes)
    ├── WorkerSettings            + a worker's (leases, resumes, coalescing, webhooks, metrics port)
    └── DeploySettings            + what ``make run`` and the manifests start (ports, processes)
        Settings                  all of them at once: tests and tools that drive every component

Building one directly (``ApiSettings(max_body_bytes=10)``) reads no environment: only
``from_env`` (and ``load_settings``) does, and it raises one ``SettingsError`` naming every bad
variable. Secrets (the Redis URL and password, Flower's credentials, API keys) stay out of repr().
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Self

import pydantic_settings
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from shared.settings_parse import (
    AddressList,
    Bool,
    LogLevel,
    Name,
    NonNegativeFloat,
    NonNegativeInt,
    OptionalPort,
    OptionalStr,
    Port,
    PositiveFloat,
    PositiveInt,
    Repeat,
    Schedule,
)

ENV_PREFIX = "SLUICE_"


class SettingsError(ValueError):
    """One or more ``SLUICE_*`` variables are invalid; the message lists every one."""


def env_name(field_name: str) -> str:
    """The environment variable that sets ``field_name``."""
    return ENV_PREFIX + field_name.upper()


class _EnvironSource(EnvSettingsSource):
    """``SLUICE_*`` values from a given mapping (``os.environ`` or a test's dict)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Names are matched ignoring case (pydantic-settings' default), as for ``os.environ``.
        return {name.lower(): value for name, value in self._environ.items()}


class _Base(BaseSettings):
    """Frozen, strict about names; the environment is read by ``from_env`` only."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", protected_namespaces=()
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the values given: a process reads its environment once, through ``from_env``."""
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """These settings from ``environ`` (default ``os.environ``); one error names every bad variable."""
        try:
            values = _EnvironSource(cls, os.environ if environ is None else environ)()
        except pydantic_settings.SettingsError as exc:  # a value it could not decode (JSON for a list)
            field = re.search(r'field "(\w+)"', str(exc))
            name = env_name(field.group(1)) if field else "a SLUICE_* variable"
            raise SettingsError(f"invalid settings: {name}: expected JSON ({exc.__cause__})") from None
        try:
            return cls(**values)
        except ValidationError as exc:
            raise SettingsError("invalid settings: " + "; ".join(_problems(cls, exc))) from None


def _problems(cls: type[BaseSettings], exc: ValidationError) -> list[str]:
    """``SLUICE_X: what was expected (got '...')`` for each error; never a secret's value."""
    found: list[str] = []
    for error in exc.errors(include_url=False):
        name = str(error["loc"][0]) if error["loc"] else ""
        info = cls.model_fields.get(name)
        message = str(error["msg"]).removeprefix("Value error, ")
        if info is not None and info.repr and "input" in error and "got " not in message:
            message += f" (got {error['input']!r})"
        found.append(f"{env_name(name)}: {message}")
    return found


class SharedSettings(_Base):
    """What the API and the workers both read."""

    #: The address Sluice's servers bind: the API, and a worker's metrics.
    host: str = "127.0.0.1"
    # Secrets (a Redis password in the URL) never appear in repr().
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", repr=False)
    # Redis high availability (docs/HA.md): with sentinels set, every
    # component finds the primary through them instead of ``redis_url``.
    redis_sentinels: AddressList = None
    redis_sentinel_master: Name = "sluice"
    # The message store (statuses, requests, event streams, leases) on a Redis Cluster
    # (``host:port,...`` seed nodes); the broker and the indexes stay on the Redis above.
    store_cluster_nodes: AddressList = None
    redis_password: OptionalStr = Field(default=None, repr=False)
    retention_seconds: PositiveInt = 3600
    # How long an accepted message may wait or run before its keys expire regardless.
    active_ttl_seconds: PositiveInt = 86400
    task_time_limit_seconds: PositiveInt = 1800
    stream_maxlen: PositiveInt = 100_000
    default_priority: int = 0
    # The model registry both sides load (the API checks requests against it, workers run it).
    models_file: OptionalStr = None
    model_path: OptionalStr = None
    model_threads: PositiveInt = 2
    model_context: PositiveInt = 4096
    log_level: LogLevel = "INFO"
    log_json: Bool = True
    # Route a continuing conversation to the worker holding its prefix; other workers leave it
    # to that worker while it is free or within this many ms of being free (0 = routing off).
    route_wait_ms: NonNegativeFloat = 100.0
    # What a JSON Schema (output format, tool input_schema) may cost (docs/structured-output.md):
    # the API refuses a costlier request, the worker compiles within the budget.
    schema_max_repeat: Repeat = 1000
    schema_max_properties: PositiveInt = 128
    schema_max_depth: PositiveInt = 32
    schema_max_nodes: PositiveInt = 1000
    grammar_max_bytes: PositiveInt = 262_144
    grammar_compile_seconds: PositiveFloat = 5.0
    # Message Batches (docs/BATCHES.md): the batch store both sides open.
    batch_expiry_seconds: PositiveInt = 86400
    # How long an ended batch's results stay readable.
    batch_retention_seconds: PositiveInt = 86400
    # Requests of one batch waiting in the queue or running at once (the feeder tops the window up).
    batch_window: PositiveInt = 8
    # All batches together hold at most this many messages queued or running (0 = no cap): set it
    # below the workers' slots to keep capacity free for interactive traffic.
    batch_max_inflight: NonNegativeInt = 0
    # The first N requests of every batch run one band above the rest: a small batch is not held
    # behind a huge one that already had its share (least-attained-service).
    batch_head_requests: NonNegativeInt = 20
    # Outbound URLs on private addresses: the API refuses them at submit, workers at delivery.
    webhook_allow_private: Bool = False
    upstream_allow_private_urls: Bool = False


class _ApiServing(_Base):
    """How the API is served (gunicorn reads these; ``make run`` and the manifests set them)."""

    port: Port = 8000
    api_workers: PositiveInt = 1
    api_worker_connections: PositiveInt = 2000


class _WorkerServing(_Base):
    """What a worker serves besides its tasks."""

    # Port on which a worker serves its Prometheus metrics; 0 = not served.
    worker_metrics_port: OptionalPort = 0


class ApiSettings(_ApiServing, SharedSettings):
    """What an API process reads: gunicorn's master (``api/gunicorn_conf.py``) and each app."""

    max_body_bytes: PositiveInt = 1_048_576
    # Deepest nesting of lists/objects a JSON body may have (deeper: 400 before any schema runs).
    max_json_depth: PositiveInt = 64
    ping_interval_seconds: PositiveFloat = 15.0
    # A routed turn may overtake older work at its worker only while the oldest waiting message
    # is younger than this (ms); past it, new turns go first come, first served (never starving).
    route_max_skip_ms: NonNegativeFloat = 2000.0
    # Redis connections an API process uses for commands (observers' tails have their own).
    api_redis_connections: PositiveInt = 3
    # Redis connections an API process may use for live tails; past that, streams share them.
    api_tail_connections: PositiveInt = 8
    # Events an SSE observer may have queued in the fan-out hub before it catches up from Redis instead.
    hub_mailbox_events: PositiveInt = 1024
    # Auth and limits (docs/API.md "Auth and limits", docs/SECURITY.md).
    api_keys: OptionalStr = Field(default=None, repr=False)
    api_keys_file: OptionalStr = None
    # Keys that may also use the priorities below ``priority_floor`` (the operators' band).
    operator_api_keys: OptionalStr = Field(default=None, repr=False)
    # The most urgent ``priority`` an ordinary key may ask for (-4: all but the most urgent band).
    priority_floor: int = -4
    protect_ops_endpoints: Bool = False
    rate_limit_per_minute: NonNegativeInt = 0
    rate_limit_burst: NonNegativeInt = 0
    max_concurrent_per_key: NonNegativeInt = 0
    max_queue_depth: NonNegativeInt = 0
    # Request bytes a key's messages may keep stored until they expire (256 MiB; 0 = off).
    max_stored_bytes_per_key: NonNegativeInt = 268_435_456
    # SSE streams one key may hold open at once, across every API process (0 = off).
    max_streams_per_key: NonNegativeInt = 64
    batch_max_requests: PositiveInt = 100_000
    # A batch create's body may be larger than a single message's (the smaller of the two caps wins).
    batch_max_body_bytes: PositiveInt = 67_108_864
    # Deploy safety (docs/DEPLOY.md): serve without keys on a non-loopback SLUICE_HOST only if true.
    allow_open_api: Bool = False


class WorkerSettings(_WorkerServing, SharedSettings):
    """What a worker process reads (built once in its main process, inherited by prefork children)."""

    # After a message's terminal write, wait up to this long for a replica to acknowledge it
    # (Redis WAIT 1 <ms>; 0 = off). Bounds what a failover can lose of finished streams.
    redis_wait_ms: NonNegativeInt = 0
    # Embedded model: reuse the KV of generated tokens in a continuing conversation (faster; a seed's
    # text may then depend on what the worker ran before). docs/performance.md.
    model_reuse_generated: Bool = False
    # Embedded model: bytes of saved conversation states (KV) a worker process keeps, in MB (0 = off).
    model_state_cache_mb: NonNegativeFloat = 256.0
    # Load every model a prefork child serves right after the fork (false: on first use).
    preload: Bool = True
    # Hold text deltas up to this long and write them as one merged delta (0 = every token at
    # once). 25 ms: the model benchmark's streaming efficiency reaches 1.0 (0.89 at 0 ms); bench/README.md.
    coalesce_ms: NonNegativeFloat = 25.0
    # Reliability (docs/OPERATIONS.md "Guarantees").
    lock_lease_seconds: PositiveInt = 10
    max_resumes: NonNegativeInt = 3
    batch_feed_interval_seconds: PositiveFloat = 0.2
    webhook_retry_schedule: Schedule = (5, 300, 1800, 7200, 18000, 36000, 36000)
    webhook_timeout_seconds: PositiveFloat = 10.0


class DeploySettings(_ApiServing, _WorkerServing, SharedSettings):
    """What ``make run`` (``deploy/run.py``) starts, and what the compose/k8s manifests set."""

    flower_port: Port = 5555
    # ``user:password`` for Flower; never in repr().
    flower_basic_auth: OptionalStr = Field(default=None, repr=False)
    # Prefork processes of the local worker (each loads its own model).
    worker_concurrency: PositiveInt = 1
    # Threads of the upstream (I/O-bound) worker type.
    upstream_concurrency: PositiveInt = 32
    # Without a Redis set: a Sentinel-managed primary, a replica and three sentinels (docs/HA.md).
    redis_ha: Bool = False
    # Without cluster nodes given: start a local Redis Cluster (3 primaries + 3 replicas) for the
    # message store (docs/HA.md).
    store_cluster: Bool = False
    # ``maxmemory`` of the redis-server ``make run`` and the tests start (always ``noeviction``).
    redis_maxmemory: Name = "1gb"
    # Logs and data of ``make run`` (default: ``var/`` in the checkout).
    var_dir: OptionalStr = None


class Settings(ApiSettings, WorkerSettings, DeploySettings):
    """Every knob at once. Kept (under its old name) for what drives every component from one
    object: the tests, the benchmarks, and code other branches still type ``Settings``. A
    process reads the narrower class it needs."""


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Every setting from ``environ`` (default ``os.environ``): ``Settings.from_env``."""
    return Settings.from_env(environ)
