"""JSON Schema → llama.cpp GBNF grammar; shared, so the API refuses what the worker cannot constrain."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


class GrammarError(ValueError):
    """llama.cpp's converter cannot turn this JSON Schema into a grammar."""


#: Keywords llama.cpp's converter accepts but does not enforce: a schema using one is refused,
#: since the output could break it (never a constraint silently dropped).
UNENFORCED = frozenset({
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "not", "if", "then",
    "else", "patternProperties", "uniqueItems", "propertyNames", "contains", "minContains", "maxContains",
    "dependentRequired", "dependentSchemas", "unevaluatedProperties", "unevaluatedItems",
    "minProperties", "maxProperties",
})  # fmt: skip
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMAS = ("items", "additionalProperties")


def unenforced_keywords(schema: Any, path: str = "#") -> list[str]:
    """``path/keyword`` for every keyword of ``schema`` (and its sub-schemas) a grammar cannot enforce."""
    if not isinstance(schema, dict):
        return []
    found = [f"{path}/{key}" for key in sorted(UNENFORCED & set(schema))]
    for name in _SUBSCHEMA_MAPS:
        for key, sub in (schema.get(name) or {}).items():
            found += unenforced_keywords(sub, f"{path}/{name}/{key}")
    for name in _SUBSCHEMA_LISTS:
        for index, sub in enumerate(schema.get(name) or []):
            found += unenforced_keywords(sub, f"{path}/{name}/{index}")
    for name in _SUBSCHEMAS:
        found += unenforced_keywords(schema.get(name), f"{path}/{name}")
    return found


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """The GBNF grammar accepting the JSON values of ``schema`` (llama.cpp's own converter)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    unenforced = unenforced_keywords(schema)
    if unenforced:
        raise GrammarError(
            "this model constrains output with a grammar that cannot enforce " + ", ".join(unenforced)
        )
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
