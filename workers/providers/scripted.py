"""A deterministic provider for tests and benchmarks: replays a script at a token rate, no model."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.models import ModelSpec
from shared.prompt import block_text
from workers.providers.base import Finished, ProviderError, ProviderStream, Resume, Started, TextDelta

DEFAULT_TEXT = "The quick brown fox jumps over the lazy dog. "


@dataclass
class ScriptedProvider:
    """Emits ``text`` word by word (one token each) at ``tokens_per_second``.

    ``fail_after`` tokens > 0 raises a ``ProviderError`` there, to test error endings.
    The words repeat until ``max_tokens`` when ``repeat`` is true.
    """

    model: str
    text: str = DEFAULT_TEXT
    tokens_per_second: float = 0.0
    repeat: bool = True
    fail_after: int = 0

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ScriptedProvider:
        options: Mapping[str, Any] = spec.options
        return cls(
            model=spec.id,
            text=str(options.get("text", DEFAULT_TEXT)),
            tokens_per_second=float(options.get("tokens_per_second", 0.0)),
            repeat=bool(options.get("repeat", True)),
            fail_after=int(options.get("fail_after", 0)),
        )

    def stream(self, request: dict[str, Any], max_tokens: int) -> ProviderStream:
        """Replay the script from its first word."""
        return self._play(request, max_tokens, 0)

    def resume_stream(self, request: dict[str, Any], max_tokens: int, resume: Resume) -> ProviderStream:
        """Continue the script after the ``resume.tokens`` words already produced."""
        return self._play(request, max_tokens, resume.tokens)

    def _play(self, request: dict[str, Any], max_tokens: int, start: int) -> ProviderStream:
        words = self.text.split(" ")
        tokens = [w + " " for w in words[:-1]] + ([words[-1]] if words[-1] else [])
        input_tokens = sum(len(block_text(m["content"]).split()) for m in request["messages"])
        yield Started(input_tokens=input_tokens, model=self.model)
        interval = 1.0 / self.tokens_per_second if self.tokens_per_second > 0 else 0.0
        deadline = time.monotonic()
        for produced in range(start, max_tokens):
            if not self.repeat and produced >= len(tokens):
                yield Finished("end_turn")
                return
            if self.fail_after and produced == self.fail_after:
                raise ProviderError(f"scripted failure after {produced} tokens")
            if interval:
                deadline += interval
                pause = deadline - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            yield TextDelta(tokens[produced % len(tokens)], 1)
        yield Finished("max_tokens")
