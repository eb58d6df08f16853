"""llama.cpp's own grammar engine as a test oracle: does a GBNF grammar accept a text?

Only the embedded model's vocabulary is loaded (no weights). A text is fed token by token:
each token is offered to the grammar sampler alone, and is rejected when the sampler masks
it; the end-of-generation token is accepted only where the grammar may end.
"""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp

from shared.tokenizer import default_model_path


class GrammarEngine:
    """A loaded vocabulary and the checks that run llama.cpp's grammar sampler over it."""

    def __init__(self) -> None:
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self.model = llama_cpp.llama_model_load_from_file(default_model_path().encode(), params)
        assert self.model, "the embedded model's vocabulary did not load"
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.eos = llama_cpp.llama_vocab_eos(self.vocab)

    def close(self) -> None:
        """Free the vocabulary."""
        llama_cpp.llama_model_free(self.model)

    def tokens(self, text: str) -> list[int]:
        """``text`` as the model's tokens."""
        raw = text.encode()
        buffer = (llama_cpp.llama_token * (len(raw) + 8))()
        count = llama_cpp.llama_tokenize(self.vocab, raw, len(raw), buffer, len(buffer), False, False)
        assert count >= 0
        return list(buffer[:count])

    def loads(self, gbnf: str) -> bool:
        """Whether llama.cpp parses ``gbnf``."""
        sampler = llama_cpp.llama_sampler_init_grammar(self.vocab, gbnf.encode(), b"root")
        if sampler:
            llama_cpp.llama_sampler_free(sampler)
        return bool(sampler)

    def _allowed(self, sampler: Any, token: int) -> bool:
        data = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
        candidates = llama_cpp.llama_token_data_array(data, 1, -1, False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
        return bool(data[0].logit != float("-inf"))

    def accepts(self, gbnf: str, text: str) -> bool:
        """Whether the grammar lets a model write exactly ``text`` and stop."""
        sampler = llama_cpp.llama_sampler_init_grammar(self.vocab, gbnf.encode(), b"root")
        assert sampler, "llama.cpp could not load the grammar"
        try:
            for token in self.tokens(text):
                if not self._allowed(sampler, token):
                    return False
                llama_cpp.llama_sampler_accept(sampler, token)
            return self._allowed(sampler, self.eos)
        finally:
            llama_cpp.llama_sampler_free(sampler)
