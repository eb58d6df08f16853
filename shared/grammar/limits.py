"""The cheap pre-pass: what a schema may cost, measured by walking it once before any real work.

Two tiers. Every schema (any model) is held to ``structure_problems``: nesting depth, the
number of sub-schemas and enum values, the number of properties. A schema a grammar will
constrain (the embedded model) is also held to ``repetition_problems``: every count a
grammar spells out once per repetition (``maxLength``, ``minItems``, ``{n}`` in a pattern...).
Each problem names the keyword's path inside the schema, so the 400 points at it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from shared.grammar.errors import SchemaPath
from shared.settings import SharedSettings

#: llama.cpp's grammar parser refuses a repetition count above 2000 (``MAX_REPETITION_THRESHOLD``).
ENGINE_MAX_REPEAT = 2000

_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMAS = (
    "items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
    "unevaluatedItems", "unevaluatedProperties", "additionalItems",
)  # fmt: skip
REPEAT_KEYWORDS = (
    "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
    "minContains", "maxContains",
)  # fmt: skip
_COUNTED = re.compile(r"\{(\d+)(?:,(\d*))?\}")
#: A pattern's character becomes about this many bytes of grammar (a quoted literal and a space).
PATTERN_WEIGHT = 4
#: At most this many problems are reported for one schema: enough to fix it, cheap to build.
MAX_PROBLEMS = 10


@dataclass(frozen=True)
class SchemaLimits:
    """The caps of the pre-pass and of the grammar (``SLUICE_SCHEMA_*``, ``SLUICE_GRAMMAR_*``)."""

    max_repeat: int = 1000
    max_properties: int = 128
    max_depth: int = 32
    max_nodes: int = 1000
    max_grammar_bytes: int = 262_144
    compile_seconds: float = 5.0

    @classmethod
    def from_settings(cls, settings: SharedSettings) -> SchemaLimits:
        """The limits ``settings`` configure."""
        return cls(
            max_repeat=settings.schema_max_repeat,
            max_properties=settings.schema_max_properties,
            max_depth=settings.schema_max_depth,
            max_nodes=settings.schema_max_nodes,
            max_grammar_bytes=settings.grammar_max_bytes,
            compile_seconds=settings.grammar_compile_seconds,
        )


@dataclass
class SchemaBudget:
    """What the schemas of one request have used so far: the node and property caps are per request."""

    nodes: int = 0
    properties: int = 0
    #: Bytes of patterns and enum/const values: the least text a grammar (or a regex engine) handles.
    text: int = 0


def subschemas(schema: dict[str, Any], path: SchemaPath) -> Iterator[tuple[Any, SchemaPath]]:
    """``(sub-schema, path)`` for each sub-schema directly under ``schema``."""
    for name in _SUBSCHEMA_MAPS:
        value = schema.get(name)
        if isinstance(value, dict):
            for key, sub in value.items():
                yield sub, (*path, name, key)
    for name in _SUBSCHEMA_LISTS:
        value = schema.get(name)
        if isinstance(value, list):
            for index, sub in enumerate(value):
                yield sub, (*path, name, index)
    for name in _SUBSCHEMAS:
        if name in schema:
            yield schema[name], (*path, name)


def _walk(schema: Any) -> Iterator[tuple[dict[str, Any], SchemaPath, int]]:
    """Every object sub-schema with its path and depth, iteratively (no recursion to exhaust)."""
    stack: list[tuple[Any, SchemaPath, int]] = [(schema, (), 1)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, dict):
            yield node, path, depth
            stack.extend((sub, at, depth + 1) for sub, at in reversed(list(subschemas(node, path))))


def structure_problems(
    schema: Any, limits: SchemaLimits, budget: SchemaBudget | None = None
) -> list[tuple[SchemaPath, str]]:
    """Depth, sub-schema/enum-value count and property count over the caps, with their paths.

    ``budget`` carries the counts of a request's earlier schemas (their sum is capped) and is
    updated; without it ``schema`` is counted alone.
    """
    found: list[tuple[SchemaPath, str]] = []
    budget = budget or SchemaBudget()
    for node, path, depth in _walk(schema):
        if depth > limits.max_depth:
            found.append((path, f"Schemas nest deeper than {limits.max_depth} (SLUICE_SCHEMA_MAX_DEPTH)."))
            break
        enum = node.get("enum")
        budget.nodes += 1 + (len(enum) if isinstance(enum, list) else 0)
        if budget.nodes > limits.max_nodes:
            found.append(
                (path, f"More than {limits.max_nodes} sub-schemas and enum values (SLUICE_SCHEMA_MAX_NODES).")
            )
            break
        for keyword in ("pattern", "enum", "const"):
            if keyword in node:
                value = node[keyword]
                if keyword == "pattern" and isinstance(value, str):
                    budget.text += PATTERN_WEIGHT * len(value)
                else:
                    budget.text += len(json.dumps(value, default=str))
                if budget.text > limits.max_grammar_bytes:
                    cap = limits.max_grammar_bytes
                    found.append(
                        (
                            (*path, keyword),
                            f"Patterns and enum/const values over {cap} bytes (SLUICE_GRAMMAR_MAX_BYTES).",
                        )
                    )
                    return found
        props = node.get("properties")
        if isinstance(props, dict):
            budget.properties += len(props)
            if budget.properties > limits.max_properties:
                cap = limits.max_properties
                found.append(
                    ((*path, "properties"), f"More than {cap} properties (SLUICE_SCHEMA_MAX_PROPERTIES).")
                )
                break
    return found


def _over(value: Any, cap: int) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > cap


def repetition_problems(schema: Any, limits: SchemaLimits) -> list[tuple[SchemaPath, str]]:
    """Every repetition count over ``max_repeat``: length/item keywords and ``{n}`` in patterns."""
    cap = min(limits.max_repeat, ENGINE_MAX_REPEAT)
    found: list[tuple[SchemaPath, str]] = []
    for node, path, _depth in _walk(schema):
        for keyword in REPEAT_KEYWORDS:
            if _over(node.get(keyword), cap):
                found.append(((*path, keyword), f"{keyword} is over {cap} (SLUICE_SCHEMA_MAX_REPEAT)."))
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            for match in _COUNTED.finditer(pattern):
                counts = [group for group in match.groups() if group]
                if any(len(c) > 9 or int(c) > cap for c in counts):
                    found.append(
                        (
                            (*path, "pattern"),
                            f"{match.group()} in pattern is over {cap} (SLUICE_SCHEMA_MAX_REPEAT).",
                        )
                    )
                    break
        if len(found) >= MAX_PROBLEMS:
            break
    return found
