"""Prefill planning and the per-worker prompt-state cache of the embedded model.

llama.cpp computes a token's KV entries bit-identically whatever batch of two or more
tokens it is evaluated in (measured on this engine: any split points give the same final
logits), but a batch of *one* token takes another kernel path whose results differ in the
last bits for some tokens. So a prompt is evaluated in as few batches as the engine needs
(``n_batch`` each, never a batch of one), from the first token that is not cached, and the
output of a seed does not depend on what ran before. Generated tokens are decoded one at a
time: their KV is not what a prompt evaluation of the same tokens would give, so in
``exact`` mode (the default) a continuing conversation reuses the cached prompt and
re-evaluates the previous answer; ``reuse_generated`` reuses that too (faster, but a seed's
text may then depend on which worker served the previous turn).

A worker serves many conversations in turn. Before a prompt displaces the live KV cache,
its state is saved (``llama_state_seq_get_data``: the KV of sequence 0 only, ~23 KB a token
for SmolLM2-135M, not ``Llama.save_state``'s full logits matrix) into an LRU bounded in
bytes; a later prompt that continues one of those states loads it back.
"""

from __future__ import annotations

import ctypes
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

#: A saved state is loaded only when it covers at least this many more tokens than the live cache.
MIN_RESTORE_GAIN = 16
#: A live state shorter than this is not worth saving.
MIN_SAVE_TOKENS = 32


def common_prefix(a: Any, b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def batches(start: int, end: int, n_batch: int) -> list[tuple[int, int]]:
    """``[start, end)`` cut into the fewest batches of at most ``n_batch`` tokens, none of one
    token unless the whole range is one token."""
    cuts = [*range(start, end, n_batch), end]
    spans = list(itertools.pairwise(cuts))
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] == 1:
        (a, b), (_, d) = spans[-2], spans[-1]
        spans[-2:] = [(a, b - 1), (b - 1, d)]
    return spans


@dataclass(frozen=True)
class Prefill:
    """What one prefill did: tokens reused from the live cache or a saved state, tokens evaluated."""

    prompt_tokens: int
    cached_tokens: int
    evaluated_tokens: int
    batches: int
    #: ``live`` (the KV cache as the last request left it), ``restored`` (a saved state),
    #: ``logits`` (the same prompt again: nothing evaluated), or ``cold``.
    source: str


@dataclass
class SavedState:
    """One saved KV state: its tokens, how many of them are exact (prompt-evaluated), its bytes."""

    tokens: tuple[int, ...]
    exact: int
    data: bytes

    def usable(self, reuse_generated: bool) -> int:
        return len(self.tokens) if reuse_generated else self.exact


class StateCache:
    """Saved KV states of sequence 0, least recently used evicted first, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._entries: OrderedDict[tuple[int, ...], SavedState] = OrderedDict()
        self.saves = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def best(self, tokens: list[int], reuse_generated: bool) -> tuple[SavedState | None, int]:
        """The saved state sharing the longest usable prefix with ``tokens``, and that length."""
        found, length = None, 0
        for entry in self._entries.values():
            n = common_prefix(entry.tokens[: entry.usable(reuse_generated)], tokens)
            if n > length:
                found, length = entry, n
        if found is not None:
            self._entries.move_to_end(found.tokens)
        return found, length

    def put(self, state: SavedState) -> None:
        """Keep ``state``; drop states it extends, then the least recently used over the budget."""
        if len(state.data) > self.max_bytes:
            return
        for key in [k for k in self._entries if state.tokens[: len(k)] == k or k == state.tokens]:
            self._drop(key)
        self._entries[state.tokens] = state
        self.used += len(state.data)
        self.saves += 1
        while self.used > self.max_bytes:
            self._drop(next(iter(self._entries)))
            self.evictions += 1

    def _drop(self, key: tuple[int, ...]) -> None:
        self.used -= len(self._entries.pop(key).data)


def save_seq(llm: Any, exact: int) -> SavedState:
    """The live KV of sequence 0 and its tokens."""
    import llama_cpp

    ctx = llm._ctx.ctx
    size = llama_cpp.llama_state_seq_get_size(ctx, 0)
    buffer = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
    n = llm.n_tokens
    return SavedState(tuple(int(t) for t in llm.input_ids[:n]), min(exact, n), bytes(buffer)[:written])


def load_seq(llm: Any, state: SavedState) -> None:
    """Make ``state`` the live KV of sequence 0 (raises when llama.cpp refuses it)."""
    import llama_cpp

    buffer = (ctypes.c_uint8 * len(state.data)).from_buffer_copy(state.data)
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    if llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, buffer, len(state.data), 0) == 0:
        llm.n_tokens = 0
        raise RuntimeError("llama.cpp refused a saved state")
    n = len(state.tokens)
    llm.input_ids[:n] = state.tokens
    llm.n_tokens = n
