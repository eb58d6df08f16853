"""JSON Schema → llama.cpp GBNF grammar; shared, so the API refuses what the worker cannot constrain."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


class GrammarError(ValueError):
    """llama.cpp's converter cannot turn this JSON Schema into a grammar."""


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """The GBNF grammar accepting the JSON values of ``schema`` (llama.cpp's own converter)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return str(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter raises bare AssertionError/KeyError/... on what it lacks
        raise GrammarError(f"cannot constrain output to this JSON Schema: {exc}") from None


def constrained_schemas(body: dict[str, Any]) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """``(loc, schema)`` for every schema a grammar will constrain: the output format and each tool."""
    fmt = (body.get("output_config") or {}).get("format")
    if fmt:
        yield ("output_config", "format", "schema"), fmt["schema"]
    for index, tool in enumerate(body.get("tools") or []):
        yield ("tools", index, "input_schema"), tool["input_schema"]
