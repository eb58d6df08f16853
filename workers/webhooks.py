"""Webhook delivery: the task that POSTs one signed delivery, and the dispatcher that queues due ones.

One attempt per task run: 2xx forgets the delivery; anything else (a non-2xx, a timeout, a
refused connection) schedules the next attempt after ``SLUICE_WEBHOOK_RETRY_SCHEDULE[n]``
seconds, until the schedule runs out. The target is checked against the outbound URL
policy on its resolved addresses at every attempt (DNS may change after registration).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from shared.celery_config import WEBHOOK_QUEUE, WEBHOOK_TASK
from shared.outbound import UrlRefused, check_resolved
from shared.webhooks import WebhookStore, signed_headers

log = logging.getLogger("sluice.worker")


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt did."""

    ok: bool
    status: str
    error: str = ""


def post(url: str, headers: dict[str, str], body: str, *, timeout: float, allow_private: bool) -> Attempt:
    """POST ``body`` once; never raises."""
    try:
        check_resolved(url, allow_private=allow_private)
    except UrlRefused as exc:
        return Attempt(False, "refused", str(exc))
    try:
        response = httpx.post(url, content=body.encode(), headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        return Attempt(False, "error", f"{type(exc).__name__}: {exc}")
    return Attempt(200 <= response.status_code < 300, str(response.status_code))


def deliver(
    hooks: WebhookStore, delivery_id: str, *, schedule: Sequence[int], timeout: float, allow_private: bool
) -> Attempt | None:
    """Make one attempt at ``delivery_id``; None when there is nothing (left) to deliver."""
    delivery = hooks.delivery(delivery_id)
    if delivery is None:
        hooks.done(delivery_id)
        return None
    endpoint = hooks.endpoint(delivery.tenant, delivery.endpoint_id)
    if endpoint is None:  # deleted since: nothing more goes to it
        hooks.done(delivery_id)
        return None
    headers = signed_headers(endpoint["secret"], delivery.event_id, delivery.body)
    attempt = post(endpoint["url"], headers, delivery.body, timeout=timeout, allow_private=allow_private)
    hooks.note_attempt(delivery.tenant, delivery.endpoint_id, attempt.ok, attempt.status, attempt.error)
    if attempt.ok:
        hooks.done(delivery_id)
    elif delivery.attempts < len(schedule):
        hooks.retry_later(delivery_id, schedule[delivery.attempts])
    else:
        log.warning("webhook given up", extra={"delivery": delivery_id, "status": attempt.status})
        hooks.done(delivery_id)
    return attempt


def claim_lease(timeout: float) -> float:
    """How long a dispatched delivery is left alone: its task may wait in the queue behind others
    and take ``timeout`` to run; after that the worker is taken for lost and it is sent again."""
    return 3 * timeout + 5


def dispatch_due(hooks: WebhookStore, app: Any, *, lease: float, limit: int = 100) -> int:
    """Send a delivery task for every due delivery in the outbox; returns how many."""
    due = hooks.claim_due(limit, lease)
    for delivery_id in due:
        app.send_task(WEBHOOK_TASK, args=[delivery_id], queue=WEBHOOK_QUEUE)
    return len(due)
