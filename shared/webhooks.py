"""Webhooks per the Standard Webhooks specification: endpoints, signing and the delivery outbox.

An event to send becomes one *delivery* per subscribed endpoint: a hash holding the exact
body, and an entry in the outbox (a sorted set scored by when it is next due). The
dispatcher (``workers/webhooks.py``, in the feeder's loop) claims due deliveries by pushing
their score a lease ahead and sends a Celery task for each; the task POSTs, then deletes the
delivery (2xx) or schedules the next attempt (``SLUICE_WEBHOOK_RETRY_SCHEDULE``). A worker
that dies mid-delivery leaves the entry in the outbox, due again when the lease runs out:
delivery is at-least-once across worker and (with AOF) Redis restarts, with the same
``webhook-id`` every time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from shared.keys import WEBHOOK_OUTBOX, webhook_delivery, webhook_endpoints, webhook_state
from shared.store import now_iso


class EventType(StrEnum):
    """The events an endpoint may subscribe to."""

    MESSAGE_COMPLETED = "message.completed"
    MESSAGE_FAILED = "message.failed"
    MESSAGE_CANCELLED = "message.cancelled"
    BATCH_ENDED = "batch.ended"


ALL_EVENTS = tuple(e.value for e in EventType)
#: The event a message's terminal status sends.
MESSAGE_EVENTS = {
    "completed": EventType.MESSAGE_COMPLETED,
    "error": EventType.MESSAGE_FAILED,
    "cancelled": EventType.MESSAGE_CANCELLED,
}
SECRET_PREFIX = "whsec_"
#: A claimed delivery is due again after this long if its task never reports (worker lost), unless
#: the caller passes its own (the dispatcher: a few times the delivery timeout).
CLAIM_LEASE_SECONDS = 120
#: How long a delivery that keeps failing is kept in all: past the longest schedule.
DELIVERY_TTL_SECONDS = 7 * 86400


def new_secret() -> str:
    """A signing secret in Standard Webhooks' form: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, webhook_id: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt (timestamped now)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, webhook_id, ts, body),
        "content-type": "application/json",
        "user-agent": "sluice-webhooks/1",
    }


@dataclass(frozen=True)
class Delivery:
    """One event to one endpoint, as stored in its delivery hash."""

    delivery_id: str
    tenant: str
    endpoint_id: str
    event_id: str
    body: str
    attempts: int


class WebhookStore:
    """Endpoints per tenant, their delivery state, and the outbox."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    # -- endpoints -----------------------------------------------------------------------------

    def add_endpoint(
        self, tenant: str, url: str, events: Sequence[str], description: str | None
    ) -> dict[str, Any]:
        """Register an endpoint; returns it with its secret (shown only this once)."""
        endpoint_id = "we_" + secrets.token_hex(12)
        endpoint: dict[str, Any] = {
            "id": endpoint_id,
            "url": url,
            "events": list(events),
            "description": description,
            "created_at": now_iso(),
            "secret": new_secret(),
        }
        self.redis.hset(webhook_endpoints(tenant), endpoint_id, json.dumps(endpoint))
        return endpoint

    def endpoints(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's endpoints (with secrets), oldest first."""
        raw: dict[str, str] = self.redis.hgetall(webhook_endpoints(tenant))
        found = [json.loads(value) for value in raw.values()]
        return sorted(found, key=lambda e: (e["created_at"], e["id"]))

    def endpoint(self, tenant: str, endpoint_id: str) -> dict[str, Any] | None:
        """One endpoint, or None."""
        raw = self.redis.hget(webhook_endpoints(tenant), endpoint_id)
        return json.loads(raw) if raw else None

    def delete_endpoint(self, tenant: str, endpoint_id: str) -> bool:
        """Forget an endpoint and its delivery state; its pending deliveries are dropped when due."""
        removed = bool(self.redis.hdel(webhook_endpoints(tenant), endpoint_id))
        state = self.state(tenant, endpoint_id)
        if state:
            self.redis.hdel(webhook_state(tenant), *(f"{endpoint_id}:{name}" for name in state))
        return removed

    def state(self, tenant: str, endpoint_id: str) -> dict[str, str]:
        """An endpoint's delivery state: attempts, succeeded, failed, last status, error and time."""
        raw: dict[str, str] = self.redis.hgetall(webhook_state(tenant))
        prefix = f"{endpoint_id}:"
        return {k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)}

    def note_attempt(self, tenant: str, endpoint_id: str, ok: bool, status: str, error: str) -> None:
        """Record one attempt's outcome in the endpoint's state."""
        key, prefix = webhook_state(tenant), f"{endpoint_id}:"
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(key, prefix + "attempts", 1)
        pipe.hincrby(key, prefix + ("succeeded" if ok else "failed"), 1)
        pipe.hset(
            key,
            mapping={
                prefix + "last_status": status,
                prefix + "last_error": error,
                prefix + "last_attempt_at": now_iso(),
            },
        )
        pipe.execute()

    # -- emitting ------------------------------------------------------------------------------

    def emit(self, tenant: str, event: str, subject_id: str) -> int:
        """Queue ``event`` about ``subject_id`` for every endpoint of the tenant subscribed to it;
        returns how many deliveries were queued (one round trip when the tenant has none)."""
        endpoints = [e for e in self.endpoints(tenant) if event in e["events"]]
        if not endpoints:
            return 0
        event_id = "evt_" + secrets.token_hex(12)
        body = json.dumps(
            {"id": event_id, "type": event, "created_at": int(time.time()), "data": {"id": subject_id}},
            separators=(",", ":"),
        )
        now = time.time()
        pipe = self.redis.pipeline(transaction=True)
        for endpoint in endpoints:
            delivery_id = f"{event_id}.{endpoint['id']}"
            fields: Mapping[str | bytes, str | int] = {
                "tenant": tenant,
                "endpoint": endpoint["id"],
                "event_id": event_id,
                "body": body,
                "attempts": 0,
            }
            pipe.hset(webhook_delivery(delivery_id), mapping=dict(fields))
            pipe.expire(webhook_delivery(delivery_id), DELIVERY_TTL_SECONDS)
            pipe.zadd(WEBHOOK_OUTBOX, {delivery_id: now})
        pipe.execute()
        return len(endpoints)

    # -- the outbox ----------------------------------------------------------------------------

    def claim_due(self, limit: int = 100, lease: float = CLAIM_LEASE_SECONDS) -> list[str]:
        """Delivery ids due now, each pushed ``lease`` ahead so nobody sends it again meanwhile."""
        now = time.time()
        due: list[str] = self.redis.zrangebyscore(WEBHOOK_OUTBOX, "-inf", now, start=0, num=limit)
        if due:
            self.redis.zadd(WEBHOOK_OUTBOX, dict.fromkeys(due, now + lease), xx=True)
        return due

    def delivery(self, delivery_id: str) -> Delivery | None:
        """A delivery's stored fields, or None when it is gone."""
        raw: dict[str, str] = self.redis.hgetall(webhook_delivery(delivery_id))
        if not raw:
            return None
        return Delivery(
            delivery_id, raw["tenant"], raw["endpoint"], raw["event_id"], raw["body"], int(raw["attempts"])
        )

    def done(self, delivery_id: str) -> None:
        """Forget a delivery (delivered, or given up on)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(WEBHOOK_OUTBOX, delivery_id)
        pipe.delete(webhook_delivery(delivery_id))
        pipe.execute()

    def retry_later(self, delivery_id: str, delay: float) -> None:
        """Count the attempt and make the delivery due again in ``delay`` seconds."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(webhook_delivery(delivery_id), "attempts", 1)
        pipe.zadd(WEBHOOK_OUTBOX, {delivery_id: time.time() + delay})
        pipe.execute()
