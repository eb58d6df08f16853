"""A deterministic provider for tests and benchmarks: replays a script at a token rate, no model.

Two forms, both set in the model's ``options``:

- ``text`` (default a pangram), emitted word by word, repeated until ``max_tokens`` when
  ``repeat`` is true; ``fail_after`` > 0 raises a ``ProviderError`` after that many tokens.
- ``script``: a list of steps played once, in order, each one table::

      {text = "Hello there."}                      # words, one token each
      {thinking = "Let me see.", signature = "s"}  # a thinking block (signature optional)
      {tool_use = "get_weather", input = {city = "Paris"}, id = "toolu_1"}
      {error = "upstream fell over", type = "overloaded_error"}   # the stream fails here
      {stop = "end_turn"}                          # ends with this stop_reason

  Without a ``stop`` step the stop reason is ``tool_use`` after a tool call, else ``end_turn``.

``tokens_per_second`` > 0 paces every token (text words, thinking words, JSON pieces).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from shared.models import ModelSpec
from shared.prompt import block_text
from workers.providers.base import (
    Finished,
    ProviderError,
    ProviderEvent,
    ProviderStream,
    Resume,
    Started,
    TextDelta,
    ThinkingDelta,
    ToolInputDelta,
    ToolUseStart,
)

DEFAULT_TEXT = "The quick brown fox jumps over the lazy dog. "
#: Characters of tool-input JSON per token.
JSON_PIECE = 8
STEP_KINDS = ("text", "thinking", "tool_use", "error", "stop")


class ScriptError(ValueError):
    """A ``script`` step that is not one of the known kinds."""


def words(text: str) -> list[str]:
    """``text`` cut into word tokens that concatenate back to it exactly."""
    parts = text.split(" ")
    return [w + " " for w in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def check_script(script: Any) -> list[dict[str, Any]]:
    """The script, each step checked to be exactly one known kind."""
    if not isinstance(script, list):
        raise ScriptError("'script' must be a list of steps")
    for number, step in enumerate(script):
        kinds = [k for k in STEP_KINDS if isinstance(step, Mapping) and k in step]
        if len(kinds) != 1:
            raise ScriptError(f"script step {number} needs exactly one of {', '.join(STEP_KINDS)}")
    return [dict(step) for step in script]


def script_events(script: list[dict[str, Any]]) -> Iterator[ProviderEvent | ProviderError]:
    """Every event a script produces, in order (an error step yields the error to raise)."""
    stop = None
    used_tool = False
    for number, step in enumerate(script):
        if "text" in step:
            yield from (TextDelta(word) for word in words(str(step["text"])))
        elif "thinking" in step:
            pieces = words(str(step["thinking"])) or [""]
            for last, word in ((i == len(pieces) - 1, w) for i, w in enumerate(pieces)):
                yield ThinkingDelta(word, 1, step.get("signature") if last else None)
        elif "tool_use" in step:
            used_tool = True
            yield ToolUseStart(str(step.get("id") or f"toolu_scripted_{number}"), str(step["tool_use"]))
            payload = json.dumps(step.get("input") or {})
            for start in range(0, len(payload), JSON_PIECE):
                yield ToolInputDelta(payload[start : start + JSON_PIECE])
        elif "error" in step:
            failure = ProviderError(str(step["error"]))
            failure.error_type = str(step.get("type") or "api_error")
            yield failure
            return
        elif "stop" in step:
            stop = str(step["stop"])
            break
    yield Finished(stop or ("tool_use" if used_tool else "end_turn"))


@dataclass
class ScriptedProvider:
    """Emits ``text`` word by word, or plays ``script``, at ``tokens_per_second``."""

    model: str
    text: str = DEFAULT_TEXT
    tokens_per_second: float = 0.0
    repeat: bool = True
    fail_after: int = 0
    script: list[dict[str, Any]] | None = None

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ScriptedProvider:
        options: Mapping[str, Any] = spec.options
        return cls(
            model=spec.id,
            text=str(options.get("text", DEFAULT_TEXT)),
            tokens_per_second=float(options.get("tokens_per_second", 0.0)),
            repeat=bool(options.get("repeat", True)),
            fail_after=int(options.get("fail_after", 0)),
            script=check_script(options["script"]) if "script" in options else None,
        )

    def _text_events(self, max_tokens: int) -> Iterator[ProviderEvent | ProviderError]:
        tokens = words(self.text)
        for produced in range(max_tokens):
            if not self.repeat and produced >= len(tokens):
                yield Finished("end_turn")
                return
            if self.fail_after and produced == self.fail_after:
                yield ProviderError(f"scripted failure after {produced} tokens")
                return
            yield TextDelta(tokens[produced % len(tokens)], 1)
        yield Finished("max_tokens")

    def stream(self, request: dict[str, Any], max_tokens: int) -> ProviderStream:
        """Play the script (or the text) from its first token."""
        return self._play(request, max_tokens, 0)

    def resume_stream(self, request: dict[str, Any], max_tokens: int, resume: Resume) -> ProviderStream:
        """Continue after the ``resume.tokens`` tokens already produced (skipped, not paced)."""
        return self._play(request, max_tokens, resume.tokens)

    def _play(self, request: dict[str, Any], max_tokens: int, skip: int) -> ProviderStream:
        input_tokens = sum(len(block_text(m["content"]).split()) for m in request["messages"])
        yield Started(input_tokens=input_tokens, model=self.model)
        interval = 1.0 / self.tokens_per_second if self.tokens_per_second > 0 else 0.0
        deadline = time.monotonic()
        produced = 0
        source = script_events(self.script) if self.script is not None else self._text_events(max_tokens)
        for item in source:
            if isinstance(item, ProviderError):
                raise item
            if isinstance(item, Finished):
                yield item
                return
            if isinstance(item, ToolUseStart):
                yield item
                continue
            if produced >= max_tokens:
                yield Finished("max_tokens")
                return
            produced += 1
            if produced <= skip:
                continue
            if interval:
                deadline += interval
                pause = deadline - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            yield item
