"""The ``/status`` answer: a message's status hash as the API shows it."""

from __future__ import annotations

import json
from typing import Any


def status_body(message_id: str, status: dict[str, str]) -> dict[str, Any]:
    """The ``/status`` response for a status hash."""
    numbers = (
        "queue_wait_ms",
        "ttft_ms",
        "input_tokens",
        "output_tokens",
        "event_count",
        "tokens_per_second",
        "duration_ms",
        "cached_tokens",
    )
    metadata: dict[str, Any] = {
        "model": status.get("model"),
        "priority": _int(status.get("priority")),
        "queue": status.get("queue"),
        "band": _int(status.get("band")),
        "message_count": _int(status.get("message_count")),
        "thinking_enabled": status.get("thinking_enabled") == "1",
        "correlation_id": status.get("correlation_id") or None,
        "request_metadata": json.loads(status.get("request_metadata") or "{}"),
    }
    for name in numbers:
        if name in status:
            metadata[name] = float(status[name]) if "." in status[name] else int(status[name])
    if status.get("batch_id"):
        metadata["batch_id"] = status["batch_id"]
        metadata["custom_id"] = status.get("custom_id")
    for name in ("worker", "started_at", "stop_reason", "model_ran", "route", "prompt_cache"):
        if name in status:
            metadata[name] = status[name]
    return {
        "message_id": message_id,
        "status": status.get("status"),
        "created_at": status.get("created_at"),
        "updated_at": status.get("updated_at"),
        "completed_at": status.get("completed_at") or None,
        "error_message": status.get("error_message") or None,
        "stream_type": status.get("stream_type", "chat_completion"),
        "metadata": metadata,
    }


def _int(raw: str | None) -> int | None:
    return int(raw) if raw not in (None, "") else None
