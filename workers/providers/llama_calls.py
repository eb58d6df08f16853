"""Grammar-constrained output for the embedded model: JSON-schema text and tool calls.

A forced tool call is written the way the tools prompt teaches
(``<tool_call>{"name": ..., "arguments": ...}``): the fixed parts are fed to the
model as prompt, the name is sampled under a grammar of the given names, the
arguments under the grammar of the tool's ``input_schema``. So the call always
parses and validates, and its arguments stream as they are sampled.
"""

from __future__ import annotations

import json
from typing import Any

from shared.grammar import GrammarError, schema_to_gbnf
from workers.providers.base import ProviderError

CALL_MARKER = "<tool_call>"
NAME_PREFIX = '\n{"name": '
ARGUMENTS_PREFIX = ', "arguments": '


def schema_grammar(schema: dict[str, Any]) -> Any:
    """A llama.cpp grammar accepting exactly the JSON values of ``schema``."""
    import llama_cpp

    try:
        return llama_cpp.LlamaGrammar.from_string(schema_to_gbnf(schema), verbose=False)
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
