"""Pure translation for the ``anthropic`` provider: ChatBody → Messages API params, events → provider events.

The request is already Anthropic-shaped, so it passes through with Sluice's own fields removed.
Upstream events pass through as provider events; the generation loop numbers the blocks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workers.providers.base import (
    Finished,
    ProviderError,
    ProviderEvent,
    TextDelta,
    ThinkingDelta,
    ToolInputDelta,
    ToolUseStart,
)

#: ChatBody fields Anthropic's Messages API takes as they are.
PASSED = ("system", "tools", "tool_choice", "temperature", "top_p", "top_k", "service_tier")
#: ``thinking.effort`` (the seed's form) → Anthropic ``budget_tokens``.
EFFORT_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384, "max": 32000}


class UpstreamStreamError(ProviderError):
    """The upstream sent an ``error`` event mid-stream."""


def _thinking(request: dict[str, Any], max_tokens: int) -> dict[str, Any] | None:
    thinking = request.get("thinking") or {}
    if thinking.get("type") == "enabled":
        return {"type": "enabled", "budget_tokens": int(thinking.get("budget_tokens") or 1024)}
    if thinking.get("enabled"):
        budget = EFFORT_BUDGETS.get(thinking.get("effort") or "medium", 4096)
        return {"type": "enabled", "budget_tokens": max(1024, min(budget, max_tokens - 1))}
    return None


def to_anthropic_params(request: dict[str, Any], *, model: str, max_tokens: int) -> dict[str, Any]:
    """Messages API parameters for a normalised ChatBody (``stop_sequences`` are matched by the loop)."""
    params: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": request["messages"]}
    for name in PASSED:
        if request.get(name):
            params[name] = request[name]
    user = (request.get("metadata") or {}).get("user_id")
    if user:
        params["metadata"] = {"user_id": user}
    fmt = (request.get("output_config") or {}).get("format")
    if fmt:
        params["output_config"] = {"format": fmt}
    thinking = _thinking(request, max_tokens)
    if thinking:
        params["thinking"] = thinking
    return params


@dataclass
class EventTranslator:
    """Anthropic stream events (as dicts) in, provider events out."""

    input_tokens: int = 0
    model: str | None = None
    stop_reason: str | None = None
    output_tokens: int | None = None
    stopped: bool = False

    def feed(self, event: dict[str, Any]) -> list[ProviderEvent]:
        """The provider events one upstream event carries."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.model = message.get("model")
            self.input_tokens = int((message.get("usage") or {}).get("input_tokens") or 0)
        elif kind == "content_block_start":
            return self._block_start(event.get("content_block") or {})
        elif kind == "content_block_delta":
            return self._delta(event.get("delta") or {})
        elif kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
            usage = event.get("usage") or {}
            if usage.get("output_tokens") is not None:
                self.output_tokens = int(usage["output_tokens"])
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            error = event.get("error") or {}
            failure = UpstreamStreamError(f"upstream error: {error.get('message', 'unknown')}")
            failure.error_type = error.get("type") or "api_error"
            raise failure
        return []

    @staticmethod
    def _block_start(block: dict[str, Any]) -> list[ProviderEvent]:
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            return [TextDelta(block["text"])]
        if kind == "thinking" and block.get("thinking"):
            return [ThinkingDelta(block["thinking"])]
        if kind == "tool_use":
            return [ToolUseStart(block.get("id") or "", block.get("name") or "")]
        return []

    @staticmethod
    def _delta(delta: dict[str, Any]) -> list[ProviderEvent]:
        kind = delta.get("type")
        if kind == "text_delta":
            return [TextDelta(delta.get("text", ""))]
        if kind == "thinking_delta":
            return [ThinkingDelta(delta.get("thinking", ""))]
        if kind == "signature_delta":
            return [ThinkingDelta("", 0, signature=delta.get("signature"))]
        if kind == "input_json_delta":
            return [ToolInputDelta(delta.get("partial_json", ""))]
        return []

    def finished(self) -> Finished:
        """The ending, once ``message_stop`` arrived."""
        if not self.stopped:
            raise ProviderError("upstream stream ended before message_stop (cut off)")
        return Finished(self.stop_reason or "end_turn", self.output_tokens, self.input_tokens or None)
