"""Celery tasks: thin, like views. They unpack the message id and call a plain function."""

from __future__ import annotations

from celery import shared_task

from shared.celery_config import GENERATE_TASK
from workers.celery_app import get_runtime
from workers.runner import run_message


@shared_task(name=GENERATE_TASK, bind=True)
def generate(self, message_id: str, route: str = "") -> str:  # type: ignore[no-untyped-def]
    """Run the generation of ``message_id``; returns the status it ended with. ``route``: the
    private queue of the worker holding the conversation (``shared.routing``)."""
    return run_message(get_runtime(), message_id, worker=self.request.hostname or "worker", route=route)
