"""Sampling the embedded model and decoding its tokens into text deltas or a tool call.

The provider (``llama_cpp``) picks the mode from the request; this module runs it: plain or
schema-constrained text, text that may turn into a tool call, and the constrained call itself
(written as ``llama_calls`` describes).
"""

from __future__ import annotations

import codecs
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from shared.prompt import block_text
from workers.providers.base import Finished, ProviderStream, TextDelta, ToolInputDelta, ToolUseStart
from workers.providers.llama_calls import (
    ARGUMENTS_PREFIX,
    CALL_MARKER,
    NAME_PREFIX,
    marker_state,
    names_grammar,
)
from workers.providers.llama_model import SAMPLING_DEFAULTS
from workers.providers.llama_prefill import PromptPrefill


@dataclass
class Budget:
    """The output tokens a run may still produce."""

    left: int

    def spend(self) -> bool:
        """Count one produced token; True when that was the last one allowed."""
        self.left -= 1
        return self.left <= 0


@dataclass
class Decoder:
    """One ``Llama``'s sampler, fed through its prefilled KV cache, and the three ways to decode."""

    llm: Any
    kv: PromptPrefill
    #: The compiled grammar of a JSON schema (the provider's cache).
    schema_grammar: Callable[[dict[str, Any]], Any]

    def tok_plain(self, text: str) -> list[int]:
        """``text`` tokenized as plain text (special tokens not parsed)."""
        tokens: list[int] = self.llm.tokenize(text.encode(), add_bos=False, special=False)
        return tokens

    def tok(self, text: str) -> list[int]:
        """``text`` tokenized with special tokens parsed (the tool-call markers)."""
        tokens: list[int] = self.llm.tokenize(text.encode(), add_bos=False, special=True)
        return tokens

    def sample(self, request: dict[str, Any], tokens: list[int], grammar: Any = None) -> Iterator[int]:
        """Token ids from the sampler until an end-of-generation token."""
        import llama_cpp

        params = {
            k: request.get(k) if request.get(k) is not None else v for k, v in SAMPLING_DEFAULTS.items()
        }
        vocab = self.llm._model.vocab
        self.kv.prefill(tokens)
        for token in self.llm.generate(
            [],
            temp=params["temperature"],
            top_p=params["top_p"],
            top_k=params["top_k"],
            min_p=params["min_p"],
            repeat_penalty=params["repetition_penalty"],
            presence_penalty=params["presence_penalty"],
            frequency_penalty=params["frequency_penalty"],
            reset=False,
            grammar=grammar,
        ):
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                return
            yield token

    def text(
        self, request: dict[str, Any], tokens: list[int], budget: Budget, grammar: Any
    ) -> ProviderStream:
        """Text after ``tokens``, under ``grammar`` when one is given (a JSON schema's)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for token in self.sample(request, tokens, grammar):
            yield TextDelta(decoder.decode(self.llm.detokenize([token])), 1)
            if budget.spend():
                yield Finished("max_tokens")
                return
        yield Finished("end_turn")

    def text_or_call(self, request: dict[str, Any], tokens: list[int], budget: Budget) -> ProviderStream:
        """Free text; a reply that opens with ``<tool_call>`` becomes a constrained tool call."""
        prefill_text = _prefill_of(request)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        generated, held, produced = "", 0, 0
        state = marker_state(prefill_text) if prefill_text.strip() else "maybe"
        if state == "call":
            yield from self.call(request, tokens + self.tok(NAME_PREFIX), _names(request), budget)
            return
        for token in self.sample(request, tokens):
            produced += 1
            generated += decoder.decode(self.llm.detokenize([token]))
            state = marker_state(prefill_text + generated) if state == "maybe" else state
            if state == "call":
                cut = (prefill_text + generated).index(CALL_MARKER) + len(CALL_MARKER) - len(prefill_text)
                context = tokens + self.tok(generated[: max(cut, 0)] + NAME_PREFIX)
                budget.left -= 1  # the token that completed the marker (earlier ones are spent)
                yield from self.call(request, context, _names(request), budget, spent=produced - held)
                return
            if state == "text":
                text, generated = generated, ""
                yield TextDelta(text, produced - held)
                held = produced
            if budget.spend():
                if generated:
                    yield TextDelta(generated, produced - held)
                yield Finished("max_tokens")
                return
        if generated:
            yield TextDelta(generated, produced - held)
        yield Finished("end_turn")

    def call(
        self, request: dict[str, Any], context: list[int], names: list[str], budget: Budget, spent: int = 0
    ) -> ProviderStream:
        """A grammar-constrained tool call after ``context`` (which ends just before the name)."""
        if len(names) == 1:
            name = names[0]
            context = context + self.tok(json.dumps(name))
        else:
            name_tokens = list(self.sample(request, context, names_grammar(names)))
            spent += len(name_tokens)
            budget.left -= len(name_tokens)
            name = json.loads(self.llm.detokenize(name_tokens).decode())
            context = context + name_tokens
        schema = next(t["input_schema"] for t in request["tools"] if t["name"] == name)
        yield ToolUseStart(id="toolu_" + secrets.token_urlsafe(18), name=name)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for token in self.sample(request, context + self.tok(ARGUMENTS_PREFIX), self.schema_grammar(schema)):
            yield ToolInputDelta(decoder.decode(self.llm.detokenize([token])), 1 + spent)
            spent = 0
            if budget.spend():
                yield Finished("max_tokens")
                return
        yield Finished("tool_use")


def _names(request: dict[str, Any]) -> list[str]:
    return [tool["name"] for tool in request.get("tools") or []]


def _prefill_of(request: dict[str, Any]) -> str:
    messages = request["messages"]
    if messages and messages[-1]["role"] == "assistant":
        return block_text(messages[-1]["content"])
    return ""
