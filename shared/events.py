"""The Anthropic streaming event vocabulary, built in one module.

Every event is a plain dict whose ``type`` is its SSE event name. Builders
here are the only place that spells an event's shape; ``encode`` turns one
into the compact JSON stored in the Redis Stream and sent as SSE ``data:``.
"""

from __future__ import annotations

import json
from typing import Any

from shared.keys import public_id

Event = dict[str, Any]

TERMINAL_TYPES = frozenset({"message_stop", "error"})

STOP_REASONS = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", "cancelled"})


def encode(event: Event) -> str:
    """Compact JSON for storage and SSE; keeps non-ASCII text as is."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


_TYPE_PREFIX = '{"type":"'


def type_of(encoded: str) -> str:
    """The type of an event encoded by ``encode`` (``type`` is always its first key)."""
    if encoded.startswith(_TYPE_PREFIX):
        return encoded[len(_TYPE_PREFIX) : encoded.index('"', len(_TYPE_PREFIX))]
    return str(json.loads(encoded)["type"])


def is_terminal(event_type: str) -> bool:
    """True for the events that end a stream."""
    return event_type in TERMINAL_TYPES


def message_start(message_id: str, model: str, input_tokens: int) -> Event:
    """The first event of every stream; it names the message by its public id (``message_id``
    may be a storage id, ``<tenant>/<id>``: the tenant never shows)."""
    return {
        "type": "message_start",
        "message": {
            "id": public_id(message_id),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
        },
    }


def content_block_start(index: int, block: dict[str, Any]) -> Event:
    """Opens content block ``index``; ``block`` is its empty form."""
    return {"type": "content_block_start", "index": index, "content_block": block}


def text_block() -> dict[str, Any]:
    """An empty text block for ``content_block_start``."""
    return {"type": "text", "text": ""}


def thinking_block() -> dict[str, Any]:
    """An empty thinking block for ``content_block_start``."""
    return {"type": "thinking", "thinking": "", "signature": ""}


def tool_use_block(tool_use_id: str, name: str) -> dict[str, Any]:
    """An empty tool_use block for ``content_block_start``."""
    return {"type": "tool_use", "id": tool_use_id, "name": name, "input": {}}


def text_delta(index: int, text: str) -> Event:
    """More text for block ``index``."""
    return {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}


def thinking_delta(index: int, thinking: str) -> Event:
    """More thinking for block ``index``."""
    return {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "thinking_delta", "thinking": thinking},
    }


def signature_delta(index: int, signature: str) -> Event:
    """The signature that closes a thinking block."""
    return {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "signature_delta", "signature": signature},
    }


def input_json_delta(index: int, partial_json: str) -> Event:
    """More of a tool call's input JSON for block ``index``."""
    return {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "input_json_delta", "partial_json": partial_json},
    }


def content_block_stop(index: int) -> Event:
    """Closes content block ``index``."""
    return {"type": "content_block_stop", "index": index}


def message_delta(stop_reason: str, stop_sequence: str | None, output_tokens: int, **usage: int) -> Event:
    """The stop reason and the final usage."""
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
        "usage": {"output_tokens": output_tokens, **usage},
    }


def message_stop() -> Event:
    """The terminal event of a stream that ended normally (or was cancelled)."""
    return {"type": "message_stop"}


def error(error_type: str, message: str) -> Event:
    """The terminal event of a stream that failed."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def ping() -> Event:
    """Keep-alive; never stored."""
    return {"type": "ping"}
