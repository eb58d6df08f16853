"""From a normalised ChatBody to the plain chat turns a chat template renders."""

from __future__ import annotations

from typing import Any


def block_text(blocks: list[dict[str, Any]]) -> str:
    """The text a model sees for a list of content blocks."""
    return "\n".join(block["text"] for block in blocks if block.get("type") == "text")


def chat_turns(body: dict[str, Any]) -> list[dict[str, str]]:
    """``[{role, content}]`` with the system prompt first, when there is one."""
    turns: list[dict[str, str]] = []
    system = block_text(body.get("system") or [])
    if system:
        turns.append({"role": "system", "content": system})
    for message in body["messages"]:
        turns.append({"role": message["role"], "content": block_text(message["content"])})
    return turns
