"""JSON Schema → llama.cpp GBNF grammar, and what a schema may cost; shared, so the API refuses
what the worker could not constrain, or not cheaply, before anything is stored.

- ``limits``: ``SchemaLimits`` and the cheap pre-pass (structure for every schema, repetitions
  for grammar-constrained ones), each problem with the keyword's path.
- ``gbnf``: the converter's walk over a schema (rule bookkeeping and size budget in ``rules``,
  objects, arrays and strings in ``shapes``, keyword sets and schema rewrites in
  ``vocabulary``, integer ranges from ``ranges``, patterns from ``pattern``, GBNF spelling
  in ``text``).
- ``errors``: ``GrammarError`` ⊃ ``SchemaTooCostly``, carrying the path inside the schema.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from shared.grammar.errors import GrammarError, SchemaPath, SchemaTooCostly
from shared.grammar.gbnf import schema_grammar_text
from shared.grammar.limits import SchemaBudget, SchemaLimits, repetition_problems, structure_problems

__all__ = [
    "GrammarError",
    "SchemaBudget",
    "SchemaLimits",
    "SchemaPath",
    "SchemaTooCostly",
    "constrained_schemas",
    "grammar_problems",
    "repetition_problems",
    "schema_hash",
    "schema_to_gbnf",
    "structure_problems",
]


def schema_to_gbnf(schema: Any, limits: SchemaLimits | None = None) -> str:
    """The GBNF grammar accepting the JSON values of ``schema``, after the pre-pass.

    Raises ``GrammarError`` (``SchemaTooCostly`` for a cap) with ``path`` at the keyword.
    """
    limits = limits or SchemaLimits()
    for path, msg in structure_problems(schema, limits) + repetition_problems(schema, limits):
        raise SchemaTooCostly(msg, path)
    return schema_grammar_text(schema, limits)


def grammar_problems(schema: Any, limits: SchemaLimits) -> list[tuple[SchemaPath, str]]:
    """``(path, message)`` for each reason ``schema`` cannot be (cheaply) turned into a grammar."""
    found = repetition_problems(schema, limits)
    if found:
        return found
    try:
        schema_grammar_text(schema, limits)
    except GrammarError as exc:
        return [(exc.path, str(exc))]
    return []


def schema_hash(schema: Any) -> str:
    """A stable digest of ``schema`` (key order does not matter): the grammar cache's key."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def constrained_schemas(body: dict[str, Any]) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """``(loc, schema)`` for every schema a grammar will constrain: the output format and each tool."""
    fmt = (body.get("output_config") or {}).get("format")
    if fmt:
        yield ("output_config", "format", "schema"), fmt["schema"]
    for index, tool in enumerate(body.get("tools") or []):
        yield ("tools", index, "input_schema"), tool["input_schema"]
