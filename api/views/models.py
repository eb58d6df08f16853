"""The models this deployment serves, with their capabilities and limits."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from api.errors import ApiError
from api.services import services
from shared.capabilities import capabilities_of
from shared.models import ModelSpec


def model_body(spec: ModelSpec) -> dict[str, Any]:
    """One model as the API shows it."""
    caps = capabilities_of(spec)
    return {
        "id": spec.id,
        "type": "model",
        "display_name": spec.display_name or spec.id,
        "provider": spec.provider,
        "aliases": list(spec.aliases),
        "queue": spec.queue,
        "capabilities": {
            "honoured": sorted(caps.honoured),
            "ignored": sorted(caps.ignored),
            "refused": sorted(caps.refused()),
        },
        "limits": {
            "context_window": spec.context_window,
            "max_output_tokens": spec.max_output_tokens,
            "default_max_tokens": spec.default_max_tokens,
        },
    }


def list_models() -> Response:
    """Every served model."""
    data = [model_body(spec) for spec in services().registry]
    return jsonify(
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


def get_model(model_id: str) -> Response:
    """One model, by id or alias."""
    spec = services().registry.resolve(model_id)
    if spec is None:
        raise ApiError(404, f"Model {model_id!r} not found.")
    return jsonify(model_body(spec))
