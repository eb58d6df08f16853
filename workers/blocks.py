"""Content blocks of the answer being generated: opened, numbered and closed as delta kinds change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared import events as ev
from workers.providers.base import ProviderError, ThinkingDelta, ToolInputDelta, ToolUseStart


@dataclass
class Blocks:
    """Builds content-block events: opens, closes and numbers blocks as delta kinds change."""

    index: int = -1
    kind: str | None = None
    tokens: int = 0
    events: list[ev.Event] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def _open(self, kind: str, block: dict[str, Any]) -> None:
        self.close()
        self.index += 1
        self.kind = kind
        self.events.append(ev.content_block_start(self.index, block))

    def close(self) -> None:
        """Close the open block, if any."""
        if self.kind is not None:
            self.events.append(ev.content_block_stop(self.index))
            self.kind = None

    def text(self, text: str, tokens: int) -> None:
        self.tokens += tokens
        if not text:
            return
        if self.kind != "text":
            self._open("text", ev.text_block())
        self.events.append(ev.text_delta(self.index, text))
        self.texts.append(text)

    def thinking(self, item: ThinkingDelta) -> None:
        self.tokens += item.tokens
        if self.kind != "thinking":
            self._open("thinking", ev.thinking_block())
        if item.thinking:
            self.events.append(ev.thinking_delta(self.index, item.thinking))
        if item.signature:
            self.events.append(ev.signature_delta(self.index, item.signature))
            self.close()

    def tool_start(self, item: ToolUseStart) -> None:
        self._open("tool_use", ev.tool_use_block(item.id, item.name))

    def tool_input(self, item: ToolInputDelta) -> None:
        self.tokens += item.tokens
        if self.kind != "tool_use":
            raise ProviderError("tool input arrived outside a tool_use block")
        if item.partial_json:
            self.events.append(ev.input_json_delta(self.index, item.partial_json))

    def take(self) -> list[ev.Event]:
        taken, self.events = self.events, []
        return taken
