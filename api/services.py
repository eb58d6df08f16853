"""What the views call: the per-app services and the message operations on them."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis
from flask import current_app

from api.auth import current_tenant, is_operator
from api.errors import ApiError, InvalidRequest, NotFound, Overloaded, unavailable
from api.limits import RateLimited, StreamSlots
from api.routing import holder_for, queue_to_holder
from shared.batches import BatchStore
from shared.broker import TaskMessages
from shared.keys import public_id, scoped_id
from shared.models import ModelRegistry, load_registry
from shared.outcomes import Outcomes
from shared.priority import Placement, place
from shared.redis_client import redis_client
from shared.settings import ApiSettings
from shared.store import (
    ANONYMOUS,
    CANCELLED,
    PROCESSING,
    Admission,
    AdmissionOutcome,
    Limits,
    MessageStore,
)
from shared.store.cluster import store_for
from shared.streams.cluster import ClusterStreamRuntime
from shared.streams.runtime import StreamRuntime
from shared.streams.tails import tail_client
from shared.webhooks import WebhookStore

#: A Redis Cluster failing over (a node lost, its slots not served yet): an outage, 503.
CLUSTER_OUTAGES = (redis.exceptions.ClusterDownError, redis.exceptions.RedisClusterException)
#: How long a cancel call waits for a running generation to reach its terminal state.
CANCEL_WAIT_SECONDS = 5.0
#: Retry-After of a 529 (queue full) and of a 429 for too many messages in flight.
OVERLOADED_RETRY_AFTER_SECONDS = 5
BUSY_RETRY_AFTER_SECONDS = 1
#: Retry-After of a 429 for a key over its storage quota (space comes back as messages expire).
QUOTA_RETRY_AFTER_SECONDS = 60


@dataclass
class Services:
    """Everything one app instance talks to, bound into ``app.extensions``."""

    settings: ApiSettings
    redis: redis.Redis
    store: MessageStore
    registry: ModelRegistry
    tasks: TaskMessages
    #: Every read of a message stream (replay, cursor check, live tail): ``shared/streams``.
    stream_runtime: StreamRuntime
    streams: StreamSlots
    batches: BatchStore
    outcomes: Outcomes


def build_services(settings: ApiSettings) -> Services:
    """Clients for ``settings``; nothing connects until first used."""
    # A small blocking pool: thousands of observers share a few connections for their short
    # commands (their live tails run on the stream runtime's own connections).
    client = redis_client(
        settings, "sluice-api", max_connections=settings.api_redis_connections, retry_on_timeout=True
    )
    # With SLUICE_STORE_CLUSTER_NODES the message keys live on a Redis Cluster (``store.messages``)
    # and the live tails read it with wakes instead of a multiplexed XREAD (shared/streams/cluster.py).
    store = store_for(
        settings,
        client,
        "sluice-api-store",
        retention_seconds=settings.retention_seconds,
        active_ttl_seconds=settings.active_ttl_seconds,
        stream_maxlen=settings.stream_maxlen,
    )
    # With SLUICE_STORE_CLUSTER_NODES the streams live on the cluster (``store.messages``) and the
    # live tails are woken by sharded pub/sub instead of a multiplexed XREAD.
    runtime_class, reads, tails = (
        (ClusterStreamRuntime, store.messages, store.messages)
        if settings.store_cluster_nodes
        else (StreamRuntime, client, tail_client(settings, "sluice-api-tail"))
    )
    stream_runtime = runtime_class(
        reads,
        tails,
        mailbox_events=settings.hub_mailbox_events,
        max_readers=settings.api_tail_connections,
    )
    # A stream renews its slot at least every ping interval; the lease outlives a few of those.
    slots = StreamSlots(client, settings.max_streams_per_key, max(60.0, 4 * settings.ping_interval_seconds))
    batches = BatchStore.for_settings(client, settings)
    outcomes = Outcomes(store, batches, WebhookStore(client))
    registry = load_registry(settings)
    return Services(
        settings, client, store, registry, TaskMessages(), stream_runtime, slots, batches, outcomes
    )


def services() -> Services:
    """The services of the current app."""
    found: Services = current_app.extensions["sluice"]
    return found


def storage_id(message_id: str) -> str:
    """The id the store keeps the calling tenant's ``message_id`` under (``shared.keys``)."""
    return scoped_id(current_tenant(), message_id)


def new_message_id() -> str:
    """A unique, URL-safe id in Anthropic's style."""
    return "msg_" + secrets.token_urlsafe(18)


def body_digest(body: dict[str, Any], message_id: str | None) -> str:
    """What makes two calls with one Idempotency-Key the same call: the body and the id asked for."""
    canonical = json.dumps({"body": body, "message_id": message_id}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Submitted:
    """A message that ``submit`` created (or found again by its Idempotency-Key)."""

    message_id: str
    #: Where the store keeps it (``storage_id``).
    storage_id: str
    placement: Placement
    #: Its creation stamp (``""`` for an idempotent repeat, which created nothing).
    epoch: str


def submit(
    svc: Services,
    body: dict[str, Any],
    message_id: str | None = None,
    *,
    idempotency_key: str | None = None,
) -> Submitted:
    """Store a validated body as a pending message and queue its task; returns its id.

    Rate, concurrency and queue-depth limits and the Idempotency-Key are applied here; a
    repeated call with the same key and body returns the first message's id and queues nothing.
    The message, its task and the limits are one Redis round trip (``MessageStore.create``).
    """
    spec = svc.registry.resolve(body["model"])
    assert spec is not None, "load_chat_body checks the model"
    tenant = current_tenant()
    idempotency = None
    if idempotency_key:
        key_digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
        idempotency = (key_digest, body_digest(body, message_id))
    message_id = message_id or new_message_id()
    sid = scoped_id(tenant, message_id)
    _check_priority(body.get("priority"), svc.settings.priority_floor)
    placement = place(spec.queue, body.get("priority"), svc.settings.default_priority)
    correlation_id = body.get("correlation_id") or ""
    metadata = body.get("metadata")
    fields = {
        "model": spec.id,
        "requested_model": body["model"],
        "priority": placement.priority,
        "queue": placement.queue,
        "band": placement.band,
        "message_count": len(body["messages"]),
        "thinking_enabled": int(_thinking_enabled(body)),
        "correlation_id": correlation_id,
        "request_metadata": json.dumps(metadata) if metadata else "{}",
        "stream_type": "chat_completion",
    }
    settings = svc.settings
    limits = limits_of(settings, tenant)
    holder = holder_for(svc.redis, settings.route_wait_ms, settings.route_max_skip_ms, spec, body)
    if holder:
        fields["route"] = holder
    task = svc.tasks.generate(sid, placement.queue, placement.band, correlation_id, route=holder)
    try:
        admission = svc.store.create(
            sid, body, fields, tenant=tenant, idempotency=idempotency, limits=limits, task=task
        )
    except (redis.ConnectionError, redis.TimeoutError, *CLUSTER_OUTAGES) as exc:
        # Redis is the broker too; the message and its task are stored together or not at all
        # (in Redis Cluster mode, a create cut short is finished or dropped: shared/store/cluster.py).
        raise unavailable("The task queue is unavailable; try again.") from exc
    except redis.exceptions.OutOfMemoryError as exc:  # type: ignore[attr-defined]  # (types-redis lacks it)
        # Redis at maxmemory with noeviction refuses the whole script: nothing stored or queued.
        raise Overloaded("Storage is full; try again later.", OVERLOADED_RETRY_AFTER_SECONDS) from exc
    if admission.outcome is not AdmissionOutcome.CREATED:
        _refuse(admission, settings.rate_limit_per_minute)
    if holder:
        queue_to_holder(svc.redis, svc.tasks, sid, placement.queue, placement.band, holder, correlation_id)
    return Submitted(public_id(admission.message_id), admission.message_id, placement, admission.epoch)


def _check_priority(priority: int | None, floor: int) -> None:
    """400 when an ordinary key asks for a priority more urgent than ``floor`` (the operators')."""
    if priority is not None and priority < floor and not is_operator():
        text = f"priority {priority} is reserved for operator keys; this key may use {floor} or higher."
        raise InvalidRequest(text, [{"loc": ["priority"], "msg": text, "type": "value_error.reserved"}])


def limits_of(settings: ApiSettings, tenant: str) -> Limits:
    """The admission limits ``settings`` configure for ``tenant``. The stored-bytes quota is per
    key: with auth off there is one tenant, and Redis's ``maxmemory`` is the bound."""
    return Limits(
        settings.max_queue_depth,
        settings.max_concurrent_per_key,
        settings.rate_limit_per_minute,
        settings.rate_limit_burst,
        0 if tenant == ANONYMOUS else settings.max_stored_bytes_per_key,
    )


def spend_rate_token(svc: Services) -> None:
    """Charge a body-only call (``/validate``, ``/count_tokens``) to the caller's rate: the same
    bucket as submits, so an endpoint that stores nothing is no free way to make the API work."""
    try:
        tenant = current_tenant()
        wait = svc.store.take_rate_token(tenant, limits_of(svc.settings, tenant))
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise unavailable("Redis is unavailable; try again.") from exc
    if wait:
        per_minute = svc.settings.rate_limit_per_minute
        raise RateLimited(f"Rate limit exceeded: {per_minute} requests per minute for this key.", wait)


def _refuse(admission: Admission, rate_per_minute: int) -> None:
    """Raise the error for an admission that created nothing (an idempotent repeat passes)."""
    if admission.outcome is AdmissionOutcome.LIMITED:
        raise RateLimited(
            f"Rate limit exceeded: {rate_per_minute} requests per minute for this key.",
            admission.retry_after,
        )
    if admission.outcome is AdmissionOutcome.EXISTS:
        raise InvalidRequest(f"Message with message_id {public_id(admission.message_id)} already exists")
    if admission.outcome is AdmissionOutcome.CONFLICT:
        raise ApiError(409, "This Idempotency-Key was already used with a different request body.")
    if admission.outcome is AdmissionOutcome.OVERLOADED:
        raise Overloaded("The queue is full; try again later.", OVERLOADED_RETRY_AFTER_SECONDS)
    if admission.outcome is AdmissionOutcome.QUOTA:
        raise RateLimited(
            "This key's stored messages are over its storage quota (SLUICE_MAX_STORED_BYTES_PER_KEY); "
            "delete messages or wait for them to expire.",
            QUOTA_RETRY_AFTER_SECONDS,
        )
    if admission.outcome is AdmissionOutcome.BUSY:
        raise RateLimited("Too many messages pending or running for this key.", BUSY_RETRY_AFTER_SECONDS)


def _thinking_enabled(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking") or {}
    return bool(thinking.get("enabled") or thinking.get("type") == "enabled")


def require_status(svc: Services, message_id: str) -> dict[str, str]:
    """The status hash, or 404 (also when the message belongs to another key)."""
    status = svc.store.get_status(storage_id(message_id))
    if status is None or status.get("tenant", ANONYMOUS) != current_tenant():
        raise NotFound(message_id)
    return status


def cancel(svc: Services, message_id: str) -> str:
    """Cancel a message and wait briefly for its terminal state; returns the status."""
    require_status(svc, message_id)
    sid = storage_id(message_id)
    status: str | None = svc.store.cancel(sid)
    if status is None:
        raise NotFound(message_id)
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while status == PROCESSING and time.monotonic() < deadline:
        time.sleep(0.01)
        status = svc.store.get_field(sid, "status") or status
    if status == CANCELLED:  # ended here when it was pending: its batch result and webhook event
        svc.outcomes.message_ended(sid)
    return status
