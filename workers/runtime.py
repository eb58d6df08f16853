"""Per-process worker state: settings, the store and loaded providers, built after the fork."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import redis

from shared import redis_client as clients
from shared.batches import BatchStore
from shared.broker import TaskMessages
from shared.models import ModelRegistry, ModelSpec, load_registry
from shared.outcomes import Outcomes
from shared.settings import WorkerSettings
from shared.store import MessageStore
from shared.store.cluster import store_for
from shared.webhooks import WebhookStore
from workers.providers.base import Provider
from workers.providers.registry import build_provider


def redis_client(settings: WorkerSettings) -> redis.Redis:
    """The worker's Redis client. A command is never sent twice: an append or a finish that
    ran on a primary just before it died (or whose connection broke) must not run again on
    the new one; the run stops instead (``SinkUnavailable``) and is resumed from what is stored."""
    return clients.redis_client(settings, "sluice-worker", resend=False)


def message_store(settings: WorkerSettings, client: redis.Redis) -> MessageStore:
    """The store with this deployment's retention and caps (its message keys on a Redis Cluster
    with ``SLUICE_STORE_CLUSTER_NODES``, never resending a command there either)."""
    return store_for(
        settings,
        client,
        "sluice-worker-store",
        resend=False,
        retention_seconds=settings.retention_seconds,
        active_ttl_seconds=settings.active_ttl_seconds,
        stream_maxlen=settings.stream_maxlen,
    )


@dataclass
class Runtime:
    """What one worker process holds: built once, after the fork."""

    settings: WorkerSettings
    store: MessageStore
    registry: ModelRegistry
    #: What a message's end touches besides the message: its batch and webhooks (None: nothing).
    outcomes: Outcomes | None = None
    tasks: TaskMessages = field(default_factory=TaskMessages)
    _providers: dict[str, Provider] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def provider_for(self, spec: ModelSpec) -> Provider:
        """The provider serving ``spec``, built (and its model loaded) on first use."""
        with self._lock:
            if spec.id not in self._providers:
                self._providers[spec.id] = build_provider(spec, self.settings)
            return self._providers[spec.id]

    def preload(self, queues: list[str] | None = None) -> None:
        """Load every model served from ``queues`` (all when None) now, not on first request."""
        for spec in self.registry:
            if queues is None or spec.queue in queues:
                self.provider_for(spec)


def build_runtime(settings: WorkerSettings, **overrides: Any) -> Runtime:
    """A runtime for ``settings``."""
    client = redis_client(settings)
    store = message_store(settings, client)
    outcomes = Outcomes(store, BatchStore.for_settings(client, settings), WebhookStore(client))
    overrides.setdefault("outcomes", outcomes)
    return Runtime(settings=settings, store=store, registry=load_registry(settings), **overrides)
