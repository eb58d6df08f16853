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


def test_a_repeated_prompt_reuses_its_cached_chunks(provider):
    """After a prompt ran, the next run of it keeps the whole chunks of its cache."""
    _text(provider, "Name three colours.")
    tokens = provider.prompt_tokens(_request("Name three colours."))
    evaluated: list[int] = []
    real_eval = provider.llm.eval
    provider.llm.eval = lambda chunk: (evaluated.extend(chunk), real_eval(chunk))[1]
    try:
        _text(provider, "Name three colours.")
    finally:
        provider.llm.eval = real_eval
    prompt_part = len(tokens) - (len(tokens) - 1) // 16 * 16
    assert evaluated[:prompt_part] == tokens[-prompt_part:]
