"""Recognising a tool call in free text, and grammars for forced calls."""

from __future__ import annotations

import pytest

from workers.providers.base import ProviderError
from workers.providers.llama_calls import marker_state, names_grammar, schema_grammar


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("", "maybe"),
        ("  <tool", "maybe"),
        ("<tool_call>", "call"),
        ("\n<tool_call>\n{", "call"),
        ("<b>", "text"),
        ("Hi", "text"),
    ],
)
def test_marker_state(text, state):
    """Text is held back only while it could still open a <tool_call>."""
    assert marker_state(text) == state


def test_grammars_build():
    """A names grammar and a schema grammar build for ordinary input."""
    assert names_grammar(["a", "b_c"]) is not None
    assert schema_grammar({"type": "object", "properties": {"x": {"type": "integer"}}}) is not None


def test_unconvertible_schema_is_a_provider_error():
    """A schema llama.cpp cannot convert fails as a ProviderError, not a crash."""
    with pytest.raises(ProviderError):
        schema_grammar({"$ref": "#/nowhere"})
