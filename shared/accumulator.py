"""Turns a stream of Anthropic events back into the non-streaming ``Message``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.events import Event


class StreamError(Exception):
    """The stream ended with an ``error`` event."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


@dataclass
class Accumulator:
    """Feeds events in order; ``message`` is the Message they add up to."""

    message: dict[str, Any] = field(default_factory=dict)
    _partial_json: dict[int, str] = field(default_factory=dict)
    error: StreamError | None = None
    done: bool = False

    def feed(self, event: Event) -> None:
        """Apply one event."""
        kind = event["type"]
        if kind == "message_start":
            self.message = dict(event["message"])
            self.message["content"] = []
            self.message["usage"] = dict(self.message.get("usage") or {})
        elif kind == "content_block_start":
            self.message["content"].append(dict(event["content_block"]))
        elif kind == "content_block_delta":
            self._apply_delta(event["index"], event["delta"])
        elif kind == "content_block_stop":
            self._close_block(event["index"])
        elif kind == "message_delta":
            self.message["stop_reason"] = event["delta"].get("stop_reason")
            self.message["stop_sequence"] = event["delta"].get("stop_sequence")
            self.message["usage"].update(event.get("usage") or {})
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.error = StreamError(event["error"]["type"], event["error"]["message"])
            self.done = True

    def _apply_delta(self, index: int, delta: dict[str, Any]) -> None:
        block = self.message["content"][index]
        kind = delta["type"]
        if kind == "text_delta":
            block["text"] += delta["text"]
        elif kind == "thinking_delta":
            block["thinking"] += delta["thinking"]
        elif kind == "signature_delta":
            block["signature"] = block.get("signature", "") + delta["signature"]
        elif kind == "input_json_delta":
            self._partial_json[index] = self._partial_json.get(index, "") + delta["partial_json"]

    def _close_block(self, index: int) -> None:
        block = self.message["content"][index]
        if block["type"] == "tool_use" and index in self._partial_json:
            raw = self._partial_json.pop(index)
            try:
                block["input"] = json.loads(raw) if raw.strip() else {}
            except ValueError:  # cut by max_tokens mid-call: keep what came, never crash or drop it
                block["input"] = {}
                block["partial_input"] = raw


def accumulate(events: Iterable[Event]) -> dict[str, Any]:
    """The Message that ``events`` add up to; raises ``StreamError`` for an error ending."""
    acc = Accumulator()
    for event in events:
        acc.feed(event)
    if acc.error is not None:
        raise acc.error
    return acc.message
