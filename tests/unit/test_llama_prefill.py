"""The embedded model reuses every cached prompt token, evaluates the rest in one batch, and a
seed's text does not depend on what ran before."""

from __future__ import annotations

import pytest

from workers.providers.base import TextDelta
from workers.providers.llama_cpp import LlamaCppProvider, load_llama
from workers.providers.llama_state import batches


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


def _eval_calls(provider: LlamaCppProvider, text: str, max_tokens: int = 24) -> list[list[int]]:
    """The batches the model evaluated while prefilling ``text`` (generated tokens excluded)."""
    calls: list[list[int]] = []
    real_eval = provider.llm.eval
    provider.llm.eval = lambda chunk: (calls.append(list(chunk)), real_eval(chunk))[1]
    try:
        stream = provider.stream(_request(text), max_tokens)
        next(stream)  # Started
        next(stream, None)  # the first token: the prompt is in
        stream.close()
    finally:
        provider.llm.eval = real_eval
    return [c for c in calls if len(c) > 1]  # generate() evaluates [] first, then one token at a time


def test_a_prompt_sharing_a_prefix_evaluates_only_the_rest_in_one_batch(provider):
    """A different prompt with the same beginning reuses every shared token and evaluates the
    rest in one call (the old prefill re-evaluated from a 16-token boundary, 16 at a time)."""
    _text(provider, "Name three colours.")
    tokens = provider.prompt_tokens(_request("Name three colours of the rainbow, and three of the sea."))
    before = provider.prompt_tokens(_request("Name three colours."))
    common = next(i for i, (a, b) in enumerate(zip(tokens, before, strict=False)) if a != b)
    calls = _eval_calls(provider, "Name three colours of the rainbow, and three of the sea.")
    assert calls == [tokens[common:]]
    assert provider.last_prefill is not None and provider.last_prefill.cached_tokens == common


def test_a_fresh_prompt_is_one_batch(provider):
    """A prompt sharing only the template's header is evaluated in a single batch."""
    text = "Zebras " * 40 + "are striped; explain why in detail."
    tokens = provider.prompt_tokens(_request(text))
    calls = _eval_calls(provider, text)
    assert len(calls) == 1 and calls[0] == tokens[len(tokens) - len(calls[0]) :]
    assert len(calls[0]) > 32


def test_no_prompt_batch_is_a_single_token(provider):
    """A prompt that differs from the cached one only in its last token still evaluates two
    tokens: a one-token batch takes another kernel path and would change the text of a seed."""
    provider.llm.n_tokens = 0
    tokens = provider.prompt_tokens(_request("Count to five."))
    provider.kv.prefill(tokens)
    changed = [*tokens[:-1], tokens[-2]]
    calls: list[list[int]] = []
    real_eval = provider.llm.eval
    provider.llm.eval = lambda chunk: (calls.append(list(chunk)), real_eval(chunk))[1]
    try:
        provider.kv.prefill(changed)
    finally:
        provider.llm.eval = real_eval
    assert calls == [changed[-2:]]


def test_batches_fill_n_batch_and_never_end_with_one_token():
    """The batch plan: the fewest batches of at most n_batch, the last never a single token."""
    assert batches(0, 10, 512) == [(0, 10)]
    assert batches(5, 6, 512) == [(5, 6)]
    assert batches(0, 1025, 512) == [(0, 512), (512, 1023), (1023, 1025)]
    assert batches(0, 1024, 512) == [(0, 512), (512, 1024)]


def _reply(provider: LlamaCppProvider, request: dict) -> str:
    return "".join(e.text for e in provider.stream(request, 16) if isinstance(e, TextDelta))


def _next_turn(request: dict, answer: str, question: str) -> dict:
    return {
        **request,
        "messages": [
            *request["messages"],
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
            {"role": "user", "content": [{"type": "text", "text": question}]},
        ],
    }


def test_a_continued_conversation_gives_the_cold_text(provider):
    """A next turn after its own previous turn (cached prompt reused, answer re-evaluated)
    gives exactly the text a fresh model gives for it."""
    first = _request("Tell me about owls.")
    second = _next_turn(first, _reply(provider, first), "And about bats?")
    warm = _reply(provider, second)
    assert provider.last_prefill is not None and provider.last_prefill.cached_tokens > 0
    fresh = LlamaCppProvider(load_llama(None, 2048, 2), "SmolLM2")
    assert _reply(fresh, second) == warm
