"""From a normalised ChatBody to the plain chat turns a chat template renders.

Models without native tool support see tools described in the system prompt and
calls written as ``<tool_call>{"name", "arguments"}</tool_call>``; tool results
come back as ``<tool_response>`` text. A last assistant turn is a prefill: the
model continues it rather than answering it.
"""

from __future__ import annotations

import json
from typing import Any

TOOL_CALL_OPEN = "<tool_call>\n"
TOOL_CALL_CLOSE = "\n</tool_call>"


def tool_call_text(name: str, arguments: Any) -> str:
    """A tool call as the model writes it."""
    call = {"name": name, "arguments": arguments}
    return f"{TOOL_CALL_OPEN}{json.dumps(call)}{TOOL_CALL_CLOSE}"


def _result_text(block: dict[str, Any]) -> str:
    inner = block_text(block.get("content") or [])
    error = ' is_error="true"' if block.get("is_error") else ""
    return f"<tool_response{error}>\n{inner}\n</tool_response>"


def block_text(blocks: list[dict[str, Any]]) -> str:
    """The text a model sees for a list of content blocks."""
    parts: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            parts.append(block["text"])
        elif kind == "tool_use":
            parts.append(tool_call_text(block["name"], block["input"]))
        elif kind == "tool_result":
            parts.append(_result_text(block))
        elif kind == "document" and block["source"]["type"] == "text":
            parts.append(block["source"]["data"])
    return "\n".join(parts)


def tools_prompt(body: dict[str, Any]) -> str:
    """The system-prompt section that describes the tools, or ``""``."""
    tools = body.get("tools") or []
    if not tools or (body.get("tool_choice") or {}).get("type") == "none":
        return ""
    lines = [
        "You can call tools. To call one, answer with only this and nothing else:",
        f'{TOOL_CALL_OPEN}{{"name": <tool name>, "arguments": <JSON object>}}{TOOL_CALL_CLOSE}',
        "The tools:",
    ]
    for tool in tools:
        description = f": {tool['description']}" if tool.get("description") else ""
        lines.append(f"- {tool['name']}{description}. Arguments schema: {json.dumps(tool['input_schema'])}")
    return "\n".join(lines)


def format_prompt(body: dict[str, Any]) -> str:
    """The system-prompt line that asks for JSON of the requested schema, or ``""``."""
    fmt = (body.get("output_config") or {}).get("format")
    if not fmt:
        return ""
    return f"Answer with only a JSON value that matches this JSON Schema: {json.dumps(fmt['schema'])}"


def chat_turns(body: dict[str, Any]) -> list[dict[str, str]]:
    """``[{role, content}]`` with the system prompt first, when there is one (prefill included)."""
    turns: list[dict[str, str]] = []
    system = "\n\n".join(
        part
        for part in (block_text(body.get("system") or []), tools_prompt(body), format_prompt(body))
        if part
    )
    if system:
        turns.append({"role": "system", "content": system})
    for message in body["messages"]:
        turns.append({"role": message["role"], "content": block_text(message["content"])})
    return turns


def split_prefill(turns: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    """The turns to render, and the text of a trailing assistant turn the model continues."""
    if turns and turns[-1]["role"] == "assistant":
        return turns[:-1], turns[-1]["content"]
    return turns, ""
