"""Pure translation between Sluice (Anthropic-shaped) and the OpenAI chat-completions API.

``to_openai_request`` turns a validated, normalised ChatBody into a streaming chat request;
``ChunkTranslator`` turns the server's stream chunks (parsed JSON) into provider events.
Nothing here does I/O, so every rule has a unit test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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

#: OpenAI ``finish_reason`` → Anthropic ``stop_reason``.
FINISH_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

#: ChatBody fields copied as they are when set (the last three are vLLM / llama.cpp extensions).
_SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed")
_EXTENSIONS = ("top_k", "min_p", "repetition_penalty")


class TranslationError(ProviderError):
    """The request uses something the OpenAI chat API cannot express."""

    error_type = "invalid_request_error"


def _text(blocks: Any) -> str:
    """The text of a string or of a list of blocks (non-text blocks skipped)."""
    if isinstance(blocks, str):
        return blocks
    return "\n".join(b.get("text", "") for b in blocks or () if b.get("type") == "text")


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = source.get("url", "")
    else:
        raise TranslationError(f"image source type {source.get('type')!r} has no OpenAI form")
    return {"type": "image_url", "image_url": {"url": url}}


def _user_parts(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block))
        elif kind == "document" and (block.get("source") or {}).get("type") == "text":
            parts.append({"type": "text", "text": block["source"].get("data", "")})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise TranslationError(f"a user {kind!r} block has no OpenAI chat form")
    return parts


def _user_messages(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool results become ``tool`` messages (first, answering the calls); the rest one user message."""
    out: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for block in blocks:
        if block.get("type") == "tool_result":
            content = _text(block.get("content") or "")
            if block.get("is_error"):
                content = f"Error: {content}"
            out.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": content})
        else:
            rest.append(block)
    if rest:
        parts = _user_parts(rest)
        if all(p["type"] == "text" for p in parts):
            out.append({"role": "user", "content": "\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _assistant_message(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Text and tool calls of an assistant turn; earlier thinking is not sent back."""
    message: dict[str, Any] = {"role": "assistant", "content": _text(blocks) or None}
    calls = [
        {
            "id": b["id"],
            "type": "function",
            "function": {"name": b["name"], "arguments": json.dumps(b.get("input") or {})},
        }
        for b in blocks
        if b.get("type") == "tool_use"
    ]
    if calls:
        message["tool_calls"] = calls
    return message


def openai_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    """System prompt, then every turn, in OpenAI's message shapes."""
    messages: list[dict[str, Any]] = []
    system = _text(request.get("system") or [])
    if system:
        messages.append({"role": "system", "content": system})
    for turn in request["messages"]:
        content = turn["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if turn["role"] == "assistant":
            messages.append(_assistant_message(blocks))
        else:
            messages.extend(_user_messages(blocks))
    return messages


def _tool_choice(choice: dict[str, Any]) -> Any:
    kind = choice.get("type", "auto")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}
    return {"auto": "auto", "any": "required", "none": "none"}.get(kind, "auto")


def _json_schema(request: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the output must follow (``output_config.format`` or ``response_format``)."""
    fmt = (request.get("output_config") or {}).get("format")
    if fmt and fmt.get("type") == "json_schema":
        return dict(fmt.get("schema") or {})
    legacy = request.get("response_format") or {}
    if legacy.get("type") == "json_schema":
        spec = legacy.get("json_schema") or {}
        return dict(spec.get("schema", spec))
    return None


def thinking_enabled(request: dict[str, Any]) -> bool:
    """Whether the request turns thinking on (either accepted shape)."""
    thinking = request.get("thinking") or {}
    return bool(thinking.get("enabled")) or thinking.get("type") == "enabled"


def to_openai_request(
    request: dict[str, Any], *, model: str, max_tokens: int, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A streaming ``/chat/completions`` body for a normalised ChatBody.

    ``stop_sequences`` are not sent: the generation loop matches them itself, so the stream
    ends with ``stop_reason: "stop_sequence"`` and the matched string on every server.
    ``options`` are the model's provider options: ``thinking`` (``"reasoning_effort"`` or
    ``"chat_template_kwargs"``: how this server switches thinking), ``response_format``
    (``"json_object"`` for servers that take ``{type: json_object, schema}``), ``param_names``
    (renames, e.g. ``repetition_penalty`` → ``repeat_penalty``), ``drop_params`` (fields this
    server refuses, e.g. OpenAI's for ``priority``; list them as ignored in the model's
    capabilities) and ``extra_body`` (merged last).
    """
    options = options or {}
    body: dict[str, Any] = {
        "model": model,
        "messages": openai_messages(request),
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens,
    }
    for name in (*_SAMPLING, *_EXTENSIONS, "priority"):
        if request.get(name) is not None:
            body[name] = request[name]
    user = (request.get("metadata") or {}).get("user_id")
    if user:
        body["user"] = user
    if request.get("tools"):
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool["name"],
                    "description": tool.get("description", ""),
                    "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
                },
            }
            for tool in request["tools"]
        ]
        choice = request.get("tool_choice") or {}
        if choice:
            body["tool_choice"] = _tool_choice(choice)
            if choice.get("disable_parallel_tool_use"):
                body["parallel_tool_calls"] = False
    schema = _json_schema(request)
    if schema is not None and options.get("response_format") == "json_object":
        body["response_format"] = {"type": "json_object", "schema": schema}
    elif schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True},
        }
    if options.get("thinking") == "chat_template_kwargs":
        body["chat_template_kwargs"] = {"enable_thinking": thinking_enabled(request)}
    elif options.get("thinking") == "reasoning_effort" and thinking_enabled(request):
        body["reasoning_effort"] = (request.get("thinking") or {}).get("effort") or "medium"
    for name in options.get("drop_params") or ():
        body.pop(name, None)
    for ours, theirs in (options.get("param_names") or {}).items():
        if ours in body:
            body[theirs] = body.pop(ours)
    body.update(options.get("extra_body") or {})
    return body


@dataclass
class ChunkTranslator:
    """Stream chunks in, provider events out; remembers which tool call is open."""

    tool_index: int | None = None
    tool_calls: int = 0
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None
    _seen_tools: set[int] = field(default_factory=set)

    def feed(self, chunk: dict[str, Any]) -> list[ProviderEvent]:
        """The events one chunk carries."""
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ProviderError(f"upstream error mid-stream: {message}")
        self.model = self.model or chunk.get("model")
        usage = chunk.get("usage") or {}
        if usage.get("prompt_tokens") is not None:
            self.input_tokens = int(usage["prompt_tokens"])
        if usage.get("completion_tokens") is not None:
            self.output_tokens = int(usage["completion_tokens"])
        events: list[ProviderEvent] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                events.append(ThinkingDelta(reasoning))
            if delta.get("content"):
                events.append(TextDelta(delta["content"]))
            for call in delta.get("tool_calls") or ():
                events.extend(self._tool_call(call))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _tool_call(self, call: dict[str, Any]) -> list[ProviderEvent]:
        index = int(call.get("index", self.tool_calls))
        function = call.get("function") or {}
        events: list[ProviderEvent] = []
        if index != self.tool_index:
            if index in self._seen_tools:
                raise ProviderError(f"upstream interleaved tool call {index} after a later one")
            self._seen_tools.add(index)
            self.tool_index = index
            self.tool_calls += 1
            call_id = call.get("id") or f"toolu_{index}"
            events.append(ToolUseStart(call_id, function.get("name") or ""))
        if function.get("arguments"):
            events.append(ToolInputDelta(function["arguments"]))
        return events

    def finished(self) -> Finished:
        """The ending, once the stream is over."""
        reason = FINISH_REASONS.get(self.finish_reason or "stop", "end_turn")
        if self.tool_calls and reason == "end_turn":
            reason = "tool_use"
        return Finished(reason, self.output_tokens, self.input_tokens)
