"""Every route of the API, in one table: URL rule, methods, view, blueprint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask

from api import metrics
from api.views import health, messages, page


@dataclass(frozen=True)
class Route:
    """One URL rule and the view that serves it."""

    rule: str
    methods: tuple[str, ...]
    view: Callable[..., Any]
    blueprint: str
    summary: str


ASYNC = "/v1/messages/async"

ROUTES: tuple[Route, ...] = (
    Route(
        "/v1/messages",
        ("POST",),
        messages.create_sync,
        "messages",
        "Synchronous chat: one Message, or SSE events with stream:true",
    ),
    Route(ASYNC, ("POST",), messages.create_async, "async_messages", "Start a background generation"),
    Route(
        f"{ASYNC}/<message_id>/stream",
        ("GET",),
        messages.stream,
        "async_messages",
        "Observe a message over SSE: replay, then tail",
    ),
    Route(f"{ASYNC}/<message_id>/status", ("GET",), messages.status, "async_messages", "Status and metadata"),
    Route(
        f"{ASYNC}/<message_id>/cancel",
        ("POST",),
        messages.cancel_message,
        "async_messages",
        "Cancel a message",
    ),
    Route(
        f"{ASYNC}/<message_id>/delete",
        ("DELETE",),
        messages.delete_message,
        "async_messages",
        "Delete a message",
    ),
    Route(
        f"{ASYNC}/<message_id>",
        ("DELETE",),
        messages.delete_message,
        "async_messages",
        "Delete a message (short form)",
    ),
    Route("/health", ("GET",), health.health, "health", "Liveness"),
    Route("/ready", ("GET",), health.ready, "health", "Readiness"),
    Route("/metrics", ("GET",), metrics.metrics_view, "metrics", "Prometheus metrics"),
    Route("/", ("GET",), page.index, "page", "The observer page"),
    Route("/ui/<path:filename>", ("GET",), page.static_file, "page", "Files of the observer page"),
)


def register_routes(app: Flask, routes: tuple[Route, ...] = ROUTES) -> None:
    """One blueprint per resource, each with its rules from ``routes``."""
    blueprints: dict[str, Blueprint] = {}
    for route in routes:
        bp = blueprints.setdefault(route.blueprint, Blueprint(route.blueprint, __name__))
        endpoint = f"{route.view.__name__}_{'_'.join(route.methods).lower()}"
        if route.rule.endswith("/<message_id>"):
            endpoint += "_short"
        bp.add_url_rule(route.rule, endpoint, route.view, methods=list(route.methods))
    for bp in blueprints.values():
        app.register_blueprint(bp)
