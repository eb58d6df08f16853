"""The per-worker prompt-state cache: LRU in bytes, and conversations resumed from saved states."""

from __future__ import annotations

import pytest

from tests.unit.test_llama_prefill import _next_turn, _reply, _request
from workers.providers.llama_cpp import LlamaCppProvider, load_llama
from workers.providers.llama_state import SavedState, StateCache


def _state(tokens: tuple[int, ...], size: int, exact: int | None = None) -> SavedState:
    return SavedState(tokens, len(tokens) if exact is None else exact, b"x" * size)


def test_cache_evicts_least_recently_used_over_its_byte_budget():
    """Over budget, the state used longest ago goes first; a lookup counts as a use."""
    cache = StateCache(max_bytes=250)
    cache.put(_state((1, 2, 3), 100))
    cache.put(_state((4, 5, 6), 100))
    assert cache.best([1, 2, 3, 9], reuse_generated=True)[1] == 3  # (1, 2, 3) is now the newest
    cache.put(_state((7, 8, 9), 100))
    assert cache.used == 200 and cache.evictions == 1
    assert cache.best([4, 5, 6], reuse_generated=True) == (None, 0)
    assert cache.best([1, 2, 3], reuse_generated=True)[1] == 3


def test_a_state_replaces_the_states_it_extends():
    """A conversation's newer state supersedes its older, shorter one."""
    cache = StateCache(max_bytes=1000)
    cache.put(_state((1, 2), 10))
    cache.put(_state((1, 2, 3, 4), 20))
    assert len(cache) == 1 and cache.used == 20


def test_exact_mode_uses_only_the_prompt_part_of_a_state():
    """Without reuse_generated, a state counts only up to its prompt-evaluated tokens."""
    cache = StateCache(max_bytes=1000)
    cache.put(_state((1, 2, 3, 4, 5), 10, exact=2))
    assert cache.best([1, 2, 3, 4, 5, 6], reuse_generated=False)[1] == 2
    assert cache.best([1, 2, 3, 4, 5, 6], reuse_generated=True)[1] == 5


def test_a_state_bigger_than_the_budget_is_not_kept():
    """One state over the whole budget is skipped rather than evicting everything."""
    cache = StateCache(max_bytes=10)
    cache.put(_state((1,), 11))
    assert len(cache) == 0 and cache.used == 0


@pytest.fixture(scope="module")
def provider() -> LlamaCppProvider:
    return LlamaCppProvider(load_llama(None, 2048, 2), "SmolLM2", states=StateCache(64 * 1024 * 1024))


def test_interleaved_conversations_resume_from_saved_states(provider):
    """A, B, then A's next turn: A's state is loaded back, only the new part is evaluated,
    and the text is what a fresh model writes for that turn."""
    a1 = _request("Tell me about owls, their habits, their calls and what they hunt at night.")
    b1 = _request("Tell me about the sea, its tides, its currents and the fish that live in it.")
    a2 = _next_turn(a1, _reply(provider, a1), "And about bats?")
    _reply(provider, b1)
    warm = _reply(provider, a2)
    prefill = provider.last_prefill
    assert prefill is not None and prefill.source == "restored"
    a1_tokens = provider.prompt_tokens(a1)
    assert prefill.cached_tokens >= len(a1_tokens) - 1
    assert prefill.evaluated_tokens < prefill.prompt_tokens - len(a1_tokens) + 2
    fresh = LlamaCppProvider(load_llama(None, 2048, 2), "SmolLM2")
    assert _reply(fresh, a2) == warm


def test_reuse_generated_evaluates_only_the_new_turn(provider):
    """With reuse_generated, the previous answer's KV is reused too."""
    fast = LlamaCppProvider(provider.llm, "SmolLM2", reuse_generated=True)
    first = _request("Name a bird that swims.")
    answer = _reply(fast, first)
    second = _next_turn(first, answer, "Why?")
    _reply(fast, second)
    prefill = fast.last_prefill
    assert prefill is not None
    both = fast.prompt_tokens(first)
    assert prefill.cached_tokens > len(both) + 2  # the answer's tokens came from the cache
