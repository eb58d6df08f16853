"""Celery tasks: thin, like views. They unpack the message id and call a plain function."""

from __future__ import annotations

import contextlib

from celery import shared_task

from shared.celery_config import GENERATE_TASK, WEBHOOK_TASK
from workers.celery_app import runtime_of
from workers.runner import after_run, run_message
from workers.webhooks import claim_lease, deliver, dispatch_due


@shared_task(name=GENERATE_TASK, bind=True)
def generate(self, message_id: str, route: str = "") -> str:  # type: ignore[no-untyped-def]
    """Run the generation of ``message_id``, then what its end implies; returns its final status.
    ``route``: the private queue of the worker holding the conversation (``shared.routing``)."""
    runtime = runtime_of(self.app)
    status = run_message(runtime, message_id, worker=self.request.hostname or "worker", route=route)
    if after_run(runtime, message_id, status) and runtime.outcomes is not None:
        # Send the webhook now rather than at the feeder's next tick (it re-drives what this misses).
        lease = claim_lease(runtime.settings.webhook_timeout_seconds)
        with contextlib.suppress(Exception):
            dispatch_due(runtime.outcomes.hooks, self.app, lease=lease)
    return status


@shared_task(name=WEBHOOK_TASK, bind=True)
def webhook(self, delivery_id: str) -> str:  # type: ignore[no-untyped-def]
    """One attempt at a webhook delivery; returns its HTTP status (or what went wrong)."""
    runtime = runtime_of(self.app)
    assert runtime.outcomes is not None
    settings = runtime.settings
    attempt = deliver(
        runtime.outcomes.hooks,
        delivery_id,
        schedule=settings.webhook_retry_schedule,
        timeout=settings.webhook_timeout_seconds,
        allow_private=settings.webhook_allow_private,
    )
    return attempt.status if attempt else "gone"
