"""Webhook endpoints per tenant: register (the secret is shown once), list with delivery state, delete."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from api.auth import current_tenant
from api.errors import ApiError, InvalidRequest
from api.services import services
from api.views.messages import json_body
from shared.outbound import UrlRefused, check_resolved
from shared.schemas import problem
from shared.webhooks import ALL_EVENTS, WebhookStore

#: Longest accepted description and URL.
MAX_DESCRIPTION, MAX_URL = 512, 2048
#: Endpoints one key may register: every end of its messages fans out to each of them.
MAX_ENDPOINTS = 20


def _hooks() -> WebhookStore:
    return services().outcomes.hooks


def create_endpoint() -> Response:
    """Register ``{url, events?, description?}``; the URL must pass the outbound policy."""
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidRequest(
            "The body must be a JSON object.", [problem((), "must be an object", "type_error")]
        )
    problems = [
        problem((name,), "Unknown field.", "extra_forbidden")
        for name in sorted(set(body) - {"url", "events", "description"})
    ]
    url = body.get("url")
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        problems.append(problem(("url",), f"url must be a string of 1-{MAX_URL} characters.", "type_error"))
    else:
        try:
            check_resolved(url, allow_private=services().settings.webhook_allow_private)
        except UrlRefused as exc:
            problems.append(problem(("url",), f"URL refused: {exc}"))
    events = body.get("events", list(ALL_EVENTS))
    if not isinstance(events, list) or not events:
        problems.append(problem(("events",), "events must be a non-empty list.", "type_error"))
    else:
        problems += [
            problem(("events", i), f"Unknown event; one of {', '.join(ALL_EVENTS)}.")
            for i, e in enumerate(events)
            if e not in ALL_EVENTS
        ]
    description = body.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > MAX_DESCRIPTION):
        problems.append(
            problem(("description",), f"description must be a string of at most {MAX_DESCRIPTION}.")
        )
    if problems:
        raise InvalidRequest("Invalid webhook endpoint: " + "; ".join(p["msg"] for p in problems), problems)
    if len(_hooks().endpoints(current_tenant())) >= MAX_ENDPOINTS:
        raise InvalidRequest(f"At most {MAX_ENDPOINTS} webhook endpoints per key; delete one first.")
    endpoint = _hooks().add_endpoint(current_tenant(), str(url), list(dict.fromkeys(events)), description)
    return jsonify(endpoint)


def _public(endpoint: dict[str, Any], state: dict[str, str]) -> dict[str, Any]:
    shown = {k: v for k, v in endpoint.items() if k != "secret"}
    shown["delivery"] = {
        "attempts": int(state.get("attempts") or 0),
        "succeeded": int(state.get("succeeded") or 0),
        "failed": int(state.get("failed") or 0),
        "last_status": state.get("last_status") or None,
        "last_error": state.get("last_error") or None,
        "last_attempt_at": state.get("last_attempt_at") or None,
    }
    return shown


def list_endpoints() -> Response:
    """The tenant's endpoints with their delivery state (never their secrets)."""
    hooks, tenant = _hooks(), current_tenant()
    data = [_public(e, hooks.state(tenant, e["id"])) for e in hooks.endpoints(tenant)]
    return jsonify({"data": data})


def delete_endpoint(endpoint_id: str) -> Response:
    """Remove an endpoint; nothing more is delivered to it."""
    if not _hooks().delete_endpoint(current_tenant(), endpoint_id):
        raise ApiError(404, f"Webhook endpoint {endpoint_id} not found")
    return jsonify({"id": endpoint_id, "deleted": True})
