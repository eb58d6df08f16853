"""The embedded model reuses whole cached prompt chunks without changing what a seed produces."""

from __future__ import annotations

import pytest

from workers.providers.base import TextDelta
from workers.providers.llama_cpp import LlamaCppProvider, load_llama


def _request(text: str) -> dict:
    return {
        "model": "default",
        "seed": 7,
        "system": [],
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }


def _text(provider: LlamaCppProvider, text: str) -> str:
    return "".join(e.text for e in provider.stream(_request(text), 24) if isinstance(e, TextDelta))


@pytest.fixture(scope="module")
def provider() -> LlamaCppProvider:
    return LlamaCppProvider(load_llama(None, 2048, 2), "SmolLM2")


def test_same_seed_same_text_whatever_ran_before(provider):
    """A prompt gives the same text cold, after itself (cache hit) and after another prompt."""
    sea, moon = "Tell me a story about the sea.", "Tell me a story about the moon and the stars."
    cold = _text(provider, sea)
    assert _text(provider, sea) == cold
    _text(provider, moon)
    assert _text(provider, sea) == cold
    fresh = LlamaCppProvider(load_llama(None, 2048, 2), "SmolLM2")
    assert _text(fresh, sea) == cold


def _evaluated(provider: LlamaCppProvider, text: str) -> list[int]:
    """The tokens the model evaluated while generating for ``text``."""
    evaluated: list[int] = []
    real_eval = provider.llm.eval
    provider.llm.eval = lambda chunk: (evaluated.extend(chunk), real_eval(chunk))[1]
    try:
        _text(provider, text)
    finally:
        provider.llm.eval = real_eval
    return evaluated


def test_a_repeated_prompt_evaluates_no_prompt_token(provider):
    """The same prompt again samples its first token from the kept logits: only the
    generated tokens are evaluated, and the text is the cold run's."""
    cold = _text(provider, "Name three colours.")
    evaluated = _evaluated(provider, "Name three colours.")
    assert evaluated, "the generated tokens are evaluated"
    assert cold.startswith(provider.llm.detokenize(evaluated).decode(errors="replace"))
    assert _text(provider, "Name three colours.") == cold


def test_a_prompt_sharing_a_prefix_reuses_whole_cached_chunks(provider):
    """A different prompt with the same beginning evaluates only from the last whole chunk."""
    _text(provider, "Name three colours.")
    tokens = provider.prompt_tokens(_request("Name three colours of the rainbow."))
    before = provider.prompt_tokens(_request("Name three colours."))
    common = next(i for i, (a, b) in enumerate(zip(tokens, before, strict=False)) if a != b)
    evaluated = _evaluated(provider, "Name three colours of the rainbow.")
    keep = common // 16 * 16
    assert evaluated[: len(tokens) - keep] == tokens[keep:]
