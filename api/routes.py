"""Every route of the API, in one table: URL rule, methods, view, blueprint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask
from marshmallow import Schema

from api import metrics
from api import responses as r
from api.views import docs, health, messages, models, page, tokens
from shared.schemas import ChatBodySchema


@dataclass(frozen=True)
class Route:
    """One URL rule and the view that serves it."""

    rule: str
    methods: tuple[str, ...]
    view: Callable[..., Any]
    blueprint: str
    summary: str
    #: Marshmallow schema of the JSON request body (None: no body).
    request: type[Schema] | None = None
    #: Marshmallow schema of the 200 answer (None with ``media`` not JSON: described by ``media`` only).
    response: type[Schema] | None = None
    #: The 200 answer's media type.
    media: str = "application/json"
    #: Error statuses this route answers with (each in the error envelope).
    errors: tuple[int, ...] = ()


ASYNC = "/v1/messages/async"

ROUTES: tuple[Route, ...] = (
    Route(
        "/v1/messages",
        ("POST",),
        messages.create_sync,
        "messages",
        "Synchronous chat: one Message, or SSE events with stream:true",
        request=ChatBodySchema,
        response=r.MessageResponseSchema,
        errors=(400, 413, 429, 500, 529),
    ),
    Route(
        ASYNC,
        ("POST",),
        messages.create_async,
        "async_messages",
        "Start a background generation",
        request=ChatBodySchema,
        response=r.AsyncCreatedSchema,
        errors=(400, 413, 429, 529),
    ),
    Route(
        f"{ASYNC}/<message_id>/stream",
        ("GET",),
        messages.stream,
        "async_messages",
        "Observe a message over SSE: replay, then tail",
        media="text/event-stream",
        errors=(400, 404, 429),
    ),
    Route(
        f"{ASYNC}/<message_id>/status",
        ("GET",),
        messages.status,
        "async_messages",
        "Status and metadata",
        response=r.StatusSchema,
        errors=(404,),
    ),
    Route(
        f"{ASYNC}/<message_id>/cancel",
        ("POST",),
        messages.cancel_message,
        "async_messages",
        "Cancel a message",
        response=r.CancelledSchema,
        errors=(400, 404),
    ),
    Route(
        f"{ASYNC}/<message_id>/delete",
        ("DELETE",),
        messages.delete_message,
        "async_messages",
        "Delete a message",
        response=r.DeletedSchema,
        errors=(404,),
    ),
    Route(
        f"{ASYNC}/<message_id>",
        ("DELETE",),
        messages.delete_message,
        "async_messages",
        "Delete a message (short form)",
        response=r.DeletedSchema,
        errors=(404,),
    ),
    Route("/health", ("GET",), health.health, "health", "Liveness", response=r.HealthSchema),
    Route("/ready", ("GET",), health.ready, "health", "Readiness", response=r.ReadySchema, errors=(503,)),
    Route(
        "/v1/messages/count_tokens",
        ("POST",),
        tokens.count_message_tokens,
        "tokens",
        "Count a body's prompt tokens with the model's real chat template and tokenizer",
        request=ChatBodySchema,
        response=r.TokenCountSchema,
        errors=(400, 413, 429),
    ),
    Route(
        "/v1/messages/validate",
        ("POST",),
        tokens.validate_message,
        "tokens",
        "Dry-run validation of a body: {valid, errors}; nothing is stored",
        request=ChatBodySchema,
        response=r.ValidationResultSchema,
        errors=(400, 413, 429),
    ),
    Route(
        "/v1/models", ("GET",), models.list_models, "models", "The models served", response=r.ModelListSchema
    ),
    Route(
        "/v1/models/<model_id>",
        ("GET",),
        models.get_model,
        "models",
        "One model: capabilities and limits",
        response=r.ModelSchema,
        errors=(404,),
    ),
    Route("/openapi.json", ("GET",), docs.openapi_json, "docs", "This OpenAPI document"),
    Route(
        "/docs", ("GET",), docs.docs_page, "docs", "A page to read the OpenAPI document", media="text/html"
    ),
    Route("/metrics", ("GET",), metrics.metrics_view, "metrics", "Prometheus metrics", media="text/plain"),
    Route("/", ("GET",), page.index, "page", "The observer page", media="text/html"),
    Route(
        "/ui/<path:filename>", ("GET",), page.static_file, "page", "Files of the observer page", media="*/*"
    ),
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
