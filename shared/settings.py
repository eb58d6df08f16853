"""Typed settings built from ``SLUICE_*`` environment variables by one function."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from shared.settings_parse import (
    parse_address_list,
    parse_bool,
    parse_name,
    parse_non_negative_float,
    parse_non_negative_int,
    parse_optional_str,
    parse_port,
    parse_positive_float,
    parse_positive_int,
    parse_repeat,
    parse_schedule,
)


class SettingsError(ValueError):
    """One or more ``SLUICE_*`` variables are invalid; the message lists every one."""


@dataclass(frozen=True)
class Settings:
    """Every knob of a Sluice deployment; tests build one directly."""

    host: str = "127.0.0.1"
    port: int = 8000
    # Secrets (a Redis password in the URL, Flower's user:password) never appear in repr().
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    # Redis high availability (docs/HA.md): with sentinels set, every
    # component finds the primary through them instead of ``redis_url``.
    redis_sentinels: str | None = None
    redis_sentinel_master: str = "sluice"
    # The message store (statuses, requests, event streams, leases) on a Redis Cluster
    # (``host:port,...`` seed nodes); the broker and the indexes stay on the Redis above.
    store_cluster_nodes: str | None = None
    redis_password: str | None = field(default=None, repr=False)
    # After a message's terminal write, wait up to this long for a replica to acknowledge it
    # (Redis WAIT 1 <ms>; 0 = off). Bounds what a failover can lose of finished streams.
    redis_wait_ms: int = 0
    flower_port: int = 5555
    flower_basic_auth: str | None = field(default=None, repr=False)
    worker_concurrency: int = 1
    retention_seconds: int = 3600
    # How long an accepted message may wait or run before its keys expire regardless.
    active_ttl_seconds: int = 86400
    max_body_bytes: int = 1_048_576
    # Deepest nesting of lists/objects a JSON body may have (deeper: 400 before any schema runs).
    max_json_depth: int = 64
    ping_interval_seconds: float = 15.0
    task_time_limit_seconds: int = 1800
    stream_maxlen: int = 100_000
    default_priority: int = 0
    model_threads: int = 2
    model_context: int = 4096
    model_path: str | None = None
    # Embedded model: reuse the KV of generated tokens in a continuing conversation (faster; a seed's
    # text may then depend on what the worker ran before). docs/performance.md.
    model_reuse_generated: bool = False
    # Embedded model: bytes of saved conversation states (KV) a worker process keeps, in MB (0 = off).
    model_state_cache_mb: float = 256.0
    # API: route a continuing conversation to the worker holding its prefix; other workers leave it
    # to that worker while it is free or within this many ms of being free (0 = routing off).
    route_wait_ms: float = 100.0
    # API: a routed turn may overtake older work at its worker only while the oldest waiting message
    # is younger than this (ms); past it, new turns go first come, first served (never starving).
    route_max_skip_ms: float = 2000.0
    models_file: str | None = None
    log_level: str = "INFO"
    log_json: bool = True
    api_workers: int = 1
    api_worker_connections: int = 2000
    # Port on which a worker serves its Prometheus metrics; 0 = not served.
    worker_metrics_port: int = 0
    # Threads of the upstream (I/O-bound) worker type.
    upstream_concurrency: int = 32
    # Redis connections an API process uses for commands (observers' tails have their own, one per stream).
    api_redis_connections: int = 3
    # Events an SSE observer may have queued in the fan-out hub before it catches up from Redis instead.
    hub_mailbox_events: int = 1024
    # Worker: hold text deltas up to this long and write them as one merged delta (0 = every token at
    # once). 25 ms: the model benchmark's streaming efficiency reaches 1.0 (0.89 at 0 ms); bench/README.md.
    coalesce_ms: float = 25.0
    # Reliability and security (docs/OPERATIONS.md "Guarantees", docs/API.md "Auth and limits").
    lock_lease_seconds: int = 10
    max_resumes: int = 3
    api_keys: str | None = field(default=None, repr=False)
    api_keys_file: str | None = None
    # Keys that may also use the priorities below ``priority_floor`` (the operators' band).
    operator_api_keys: str | None = field(default=None, repr=False)
    # The most urgent ``priority`` an ordinary key may ask for (-4: all but the most urgent band).
    priority_floor: int = -4
    protect_ops_endpoints: bool = False
    rate_limit_per_minute: int = 0
    rate_limit_burst: int = 0
    max_concurrent_per_key: int = 0
    max_queue_depth: int = 0
    # Per-key limits that protect the shared parts (docs/SECURITY.md); 0 = off.
    # Request bytes a key's messages may keep stored until they expire (256 MiB).
    max_stored_bytes_per_key: int = 268_435_456
    # SSE streams one key may hold open at once, across every API process.
    max_streams_per_key: int = 64
    # Redis connections an API process may use for live tails; past that, streams share them.
    api_tail_connections: int = 8
    # What a JSON Schema (output format, tool input_schema) may cost (docs/structured-output.md).
    schema_max_repeat: int = 1000
    schema_max_properties: int = 128
    schema_max_depth: int = 32
    schema_max_nodes: int = 1000
    grammar_max_bytes: int = 262_144
    grammar_compile_seconds: float = 5.0
    # Message Batches and webhooks (docs/BATCHES.md).
    batch_max_requests: int = 100_000
    # A batch create's body may be larger than a single message's (the smaller of the two caps wins).
    batch_max_body_bytes: int = 67_108_864
    batch_expiry_seconds: int = 86400
    # How long an ended batch's results stay readable.
    batch_retention_seconds: int = 86400
    # Requests of one batch waiting in the queue or running at once (the feeder tops the window up).
    batch_window: int = 8
    # All batches together hold at most this many messages queued or running (0 = no cap): set it
    # below the workers' slots to keep capacity free for interactive traffic.
    batch_max_inflight: int = 0
    # The first N requests of every batch run one band above the rest: a small batch is not held
    # behind a huge one that already had its share (least-attained-service).
    batch_head_requests: int = 20
    batch_feed_interval_seconds: float = 0.2
    webhook_retry_schedule: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    webhook_timeout_seconds: float = 10.0
    webhook_allow_private: bool = False
    upstream_allow_private_urls: bool = False
    # Deploy safety (docs/DEPLOY.md): serve without keys on a non-loopback SLUICE_HOST only if true.
    allow_open_api: bool = False


_PARSERS: dict[str, Callable[[str], Any]] = {
    "host": str,
    "port": parse_port,
    "redis_url": str,
    "redis_sentinels": parse_address_list,
    "redis_sentinel_master": parse_name,
    "store_cluster_nodes": parse_address_list,
    "redis_password": parse_optional_str,
    "redis_wait_ms": parse_non_negative_int,
    "flower_port": parse_port,
    "flower_basic_auth": parse_optional_str,
    "worker_concurrency": parse_positive_int,
    "retention_seconds": parse_positive_int,
    "active_ttl_seconds": parse_positive_int,
    "max_body_bytes": parse_positive_int,
    "max_json_depth": parse_positive_int,
    "ping_interval_seconds": parse_positive_float,
    "task_time_limit_seconds": parse_positive_int,
    "stream_maxlen": parse_positive_int,
    "default_priority": int,
    "model_threads": parse_positive_int,
    "model_context": parse_positive_int,
    "model_path": parse_optional_str,
    "model_reuse_generated": parse_bool,
    "model_state_cache_mb": parse_non_negative_float,
    "route_wait_ms": parse_non_negative_float,
    "route_max_skip_ms": parse_non_negative_float,
    "models_file": parse_optional_str,
    "log_level": lambda raw: raw.upper(),
    "log_json": parse_bool,
    "api_workers": parse_positive_int,
    "api_worker_connections": parse_positive_int,
    "worker_metrics_port": lambda raw: 0 if raw.strip() in {"", "0"} else parse_port(raw),
    "upstream_concurrency": parse_positive_int,
    "api_redis_connections": parse_positive_int,
    "hub_mailbox_events": parse_positive_int,
    "coalesce_ms": parse_non_negative_float,
    "lock_lease_seconds": parse_positive_int,
    "max_resumes": parse_non_negative_int,
    "api_keys": parse_optional_str,
    "api_keys_file": parse_optional_str,
    "operator_api_keys": parse_optional_str,
    "priority_floor": int,
    "protect_ops_endpoints": parse_bool,
    "rate_limit_per_minute": parse_non_negative_int,
    "rate_limit_burst": parse_non_negative_int,
    "max_concurrent_per_key": parse_non_negative_int,
    "max_queue_depth": parse_non_negative_int,
    "max_stored_bytes_per_key": parse_non_negative_int,
    "max_streams_per_key": parse_non_negative_int,
    "api_tail_connections": parse_positive_int,
    "schema_max_repeat": parse_repeat,
    "schema_max_properties": parse_positive_int,
    "schema_max_depth": parse_positive_int,
    "schema_max_nodes": parse_positive_int,
    "grammar_max_bytes": parse_positive_int,
    "grammar_compile_seconds": parse_positive_float,
    "batch_max_requests": parse_positive_int,
    "batch_max_body_bytes": parse_positive_int,
    "batch_expiry_seconds": parse_positive_int,
    "batch_retention_seconds": parse_positive_int,
    "batch_window": parse_positive_int,
    "batch_head_requests": parse_non_negative_int,
    "batch_max_inflight": parse_non_negative_int,
    "batch_feed_interval_seconds": parse_positive_float,
    "webhook_retry_schedule": parse_schedule,
    "webhook_timeout_seconds": parse_positive_float,
    "webhook_allow_private": parse_bool,
    "upstream_allow_private_urls": parse_bool,
    "allow_open_api": parse_bool,
}

ENV_PREFIX = "SLUICE_"


def env_name(field_name: str) -> str:
    """The environment variable that sets ``field_name``."""
    return ENV_PREFIX + field_name.upper()


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``environ`` (default ``os.environ``); raise one error naming every bad variable."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for item in fields(Settings):
        parser = _PARSERS.get(item.name)
        name = env_name(item.name)
        if parser is None or name not in environ:
            continue
        try:
            values[item.name] = parser(environ[name])
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
    return Settings(**values)
