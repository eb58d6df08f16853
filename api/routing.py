"""The API's side of conversation routing (``shared.routing``): find the holder, queue its copy."""

from __future__ import annotations

import logging
from typing import Any

import redis
from prometheus_client import Counter

from shared.broker import TaskMessages
from shared.keys import broker_list
from shared.models import ModelSpec
from shared.routing import STATEFUL_PROVIDERS, RouteTable, conversation_prefix, now

log = logging.getLogger("sluice.api.routing")

ROUTING = Counter(
    "sluice_routing_decisions",
    "Submits of stateful models by routing decision: first_turn (nothing to continue), "
    "no_holder (no worker holds the conversation), backlog (older work waits too long: shared "
    "queue only), routed (queued to its holder as well)",
    ["decision"],
)


def holder_for(
    client: redis.Redis, wait_ms: float, max_skip_ms: float, spec: ModelSpec, body: dict[str, Any]
) -> str:
    """The private queue of the worker holding this conversation's prefix, or ``""``.

    A private copy overtakes older shared work of its band at its holder, so none is queued
    while the oldest waiting message has waited more than ``max_skip_ms``: then the message
    goes only to the shared queue (first come, first served) until the backlog is younger.
    """
    if wait_ms <= 0 or spec.provider not in STATEFUL_PROVIDERS:
        return ""
    prefix = conversation_prefix(spec.id, body)
    if prefix is None:
        ROUTING.labels("first_turn").inc()
        return ""
    try:
        holder, oldest = RouteTable(client).holder_and_oldest_pending(prefix)
    except (redis.ConnectionError, redis.TimeoutError):
        return ""  # the create that follows reports the outage
    if not holder:
        ROUTING.labels("no_holder").inc()
        return ""
    if oldest is not None and now() - oldest > max_skip_ms / 1000:
        ROUTING.labels("backlog").inc()
        return ""
    ROUTING.labels("routed").inc()
    return holder


def queue_to_holder(
    client: redis.Redis,
    tasks: TaskMessages,
    message_id: str,
    queue: str,
    band: int,
    holder: str,
    correlation: str,
) -> None:
    """Queue a second copy of the task to the holder's private queue (after the create: the
    shared copy is the one that guarantees the message runs; this one only makes it run there).
    The same hand-built message as the create's (``shared.store.admission``, ``create``), pushed
    by a plain LPUSH."""
    task = tasks.generate(message_id, queue, band, correlation, route=holder)
    try:
        client.lpush(broker_list(holder, band), task.payload)
    except (redis.ConnectionError, redis.TimeoutError):
        log.warning("could not queue to the conversation's worker", extra={"message_id": message_id})
