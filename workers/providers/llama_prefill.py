"""Bringing the embedded model's KV cache to a prompt: reuse what is cached, evaluate the rest.

The rules (why never a batch of one token, what ``reuse_generated`` changes, when a state is
saved or restored) are in ``llama_state``; this module applies them to one loaded ``Llama``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class PromptPrefill:
    """The KV cache of one ``Llama`` as its provider leaves it between prompts."""

    llm: Any
    #: Reuse the KV of generated tokens too (faster conversations; see ``llama_state``).
    reuse_generated: bool = False
    #: Saved states of earlier prompts (None: only the live KV cache is reused).
    states: StateCache | None = None
    #: What the last prefill did (the worker records it in the status and metrics).
    last: Prefill | None = None
    #: The last prompt prefilled and the logits at its end (see ``prefill``).
    _last_prompt: list[int] = field(default_factory=list)
    _last_logits: Any = None
    #: Leading tokens of the live KV cache that were evaluated as a prompt (batches >= 2).
    _exact: int = 0

    def prefill(self, tokens: list[int]) -> Prefill:
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
            self.last = Prefill(len(tokens), len(tokens), 0, 0, "logits")
            return self.last
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
        self.last = Prefill(len(tokens), keep, len(tokens) - keep, len(spans), source if keep else "cold")
        self._last_prompt = list(tokens)
        self._last_logits = self._logits_view().copy()
        return self.last

    def _save_live(self, kept: int) -> None:
        """Save the live KV state before a prompt that keeps only ``kept`` of it displaces it."""
        assert self.states is not None
        llm = self.llm
        usable = llm.n_tokens if self.reuse_generated else min(llm.n_tokens, self._exact)
        if usable >= MIN_SAVE_TOKENS and usable - kept >= MIN_RESTORE_GAIN:
            self.states.put(save_seq(llm, self._exact))

    def _logits_view(self) -> Any:
        """The sampler's input: the context's logits of the last evaluated position, in place."""
        import numpy as np

        llm = self.llm
        return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
