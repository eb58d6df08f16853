"""Grammar-constrained output for the embedded model: JSON-schema text and tool calls.

A forced tool call is written the way the tools prompt teaches
(``<tool_call>{"name": ..., "arguments": ...}``): the fixed parts are fed to the
model as prompt, the name is sampled under a grammar of the given names, the
arguments under the grammar of the tool's ``input_schema``. So the call always
parses and validates, and its arguments stream as they are sampled.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from shared.grammar import GrammarError, SchemaLimits, schema_hash, schema_to_gbnf
from workers.providers.base import ProviderError

CALL_MARKER = "<tool_call>"
NAME_PREFIX = '\n{"name": '
ARGUMENTS_PREFIX = ', "arguments": '
#: Compiled grammars a worker process keeps (least recently used dropped first).
GRAMMAR_CACHE_ENTRIES = 64


def compile_grammar(schema: Any, limits: SchemaLimits, vocab: Any = None) -> Any:
    """The llama.cpp grammar of ``schema``; with ``vocab``, parsed by llama.cpp itself once to prove
    it loads (llama-cpp-python would only parse it when sampling starts)."""
    import llama_cpp

    text = schema_to_gbnf(schema, limits)
    if vocab is not None:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode(), b"root")
        if not sampler:
            raise GrammarError("llama.cpp could not load the grammar for this schema")
        llama_cpp.llama_sampler_free(sampler)
    return llama_cpp.LlamaGrammar.from_string(text, verbose=False)


class GrammarCache:
    """Compiled grammars by schema hash, a bounded LRU; a miss compiles on a thread of its own
    within ``limits.compile_seconds``, so no schema holds the worker longer than that."""

    def __init__(self, limits: SchemaLimits, vocab: Any = None, entries: int = GRAMMAR_CACHE_ENTRIES) -> None:
        self.limits = limits
        self.vocab = vocab
        self.entries = entries
        self._grammars: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self._grammars)

    def grammar(self, schema: Any) -> Any:
        """The grammar for ``schema`` (``ProviderError`` when it cannot be built in time)."""
        key = schema_hash(schema)
        with self._lock:
            if key in self._grammars:
                self._grammars.move_to_end(key)
                return self._grammars[key]
            if self._pool is None:  # made on first use: after the worker's fork
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="sluice-grammar")
            future = self._pool.submit(compile_grammar, schema, self.limits, self.vocab)
        try:
            grammar = future.result(timeout=self.limits.compile_seconds)
        except FutureTimeout:
            budget = f"{self.limits.compile_seconds:g} s (SLUICE_GRAMMAR_COMPILE_SECONDS)"
            raise ProviderError(f"compiling the grammar took over {budget}") from None
        except GrammarError as exc:
            raise ProviderError(str(exc)) from None
        with self._lock:
            self._grammars[key] = grammar
            while len(self._grammars) > self.entries:
                self._grammars.popitem(last=False)
        return grammar


def schema_grammar(schema: dict[str, Any], limits: SchemaLimits | None = None) -> Any:
    """A llama.cpp grammar accepting exactly the JSON values of ``schema`` (uncached)."""
    try:
        return compile_grammar(schema, limits or SchemaLimits())
    except GrammarError as exc:
        raise ProviderError(str(exc)) from None


def names_grammar(names: list[str]) -> Any:
    """A grammar accepting one of ``names`` as a JSON string."""
    import llama_cpp

    alternatives = " | ".join(json.dumps(json.dumps(name)) for name in names)
    return llama_cpp.LlamaGrammar.from_string(f"root ::= {alternatives}", verbose=False)


def marker_state(text: str) -> str:
    """``"call"`` when ``text`` opens a tool call, ``"maybe"`` while it still could, else ``"text"``."""
    head = text.lstrip()
    if head.startswith(CALL_MARKER):
        return "call"
    if CALL_MARKER.startswith(head):
        return "maybe"
    return "text"
