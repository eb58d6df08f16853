"""The JSON Schema vocabulary as the grammar builder sees it: keyword sets, built-in rules, and
the small schema rewrites it relies on (merging, one type of many, the type a keyword implies)."""

from __future__ import annotations

import math
from typing import Any

from shared.grammar.errors import GrammarError, SchemaPath
from shared.grammar.ranges import integer_range

#: Keywords a grammar cannot enforce: a schema using one is refused (never a constraint dropped).
UNENFORCED = frozenset({
    "multipleOf", "not", "if", "then", "else", "patternProperties", "propertyNames", "contains",
    "minContains", "maxContains", "dependentRequired", "dependentSchemas", "unevaluatedProperties",
    "unevaluatedItems", "minProperties", "maxProperties", "dependencies",
})  # fmt: skip
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
#: Keywords that only annotate: they may sit beside ``$ref`` or ``anyOf`` without changing them.
ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "$comment", "$schema", "$id", "$anchor",
    "readOnly", "writeOnly", "deprecated", "format", "contentEncoding", "contentMediaType",
    "$defs", "definitions",
})  # fmt: skip

_TIME = (
    '([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{3})? '
    '("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])'
)
_UUID = ' "-" '.join(f"([0-9a-fA-F]{{{n}}})" for n in (8, 4, 4, 4, 12))
_JSON = ("object", "array", "string", "number", "boolean", "null")

PRIMITIVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "space": ('" "?', ()),
    "char": (r'[^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})', ()),
    "string": (r'"\"" char* "\""', ("char",)),
    "integer": ('"-"? ([0] | [1-9] [0-9]{0,15})', ()),
    "number": ('"-"? ([0] | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?', ()),
    "boolean": ('"true" | "false"', ()),
    "null": ('"null"', ()),
    "value": (" | ".join(_JSON), _JSON),
    "object": (
        '"{" space (string ":" space value ("," space string ":" space value)*)? "}"',
        ("space", "string", "value"),
    ),
    "array": ('"[" space (value ("," space value)*)? "]"', ("space", "value")),
    "date": ('([0-9]{4}) "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | [1-2] [0-9] | "3" [0-1])', ()),
    "time": (_TIME, ()),
    "date-time": ('date "T" time', ("date", "time")),
    "uuid": (_UUID, ()),
}  # fmt: skip
FORMATS = ("date", "time", "date-time", "uuid")


def of_type(schema: dict[str, Any], kind: Any) -> dict[str, Any]:
    """``schema`` for one of its types: numeric bounds only matter to numbers."""
    numeric = kind in ("integer", "number")
    return {k: v for k, v in schema.items() if numeric or k not in BOUNDS} | {"type": kind}


def implied_type(schema: dict[str, Any]) -> str | None:
    if {"properties", "additionalProperties", "required"} & set(schema):
        return "object"
    if {"items", "prefixItems", "minItems", "maxItems"} & set(schema):
        return "array"
    if {"pattern", "minLength", "maxLength"} & set(schema) or schema.get("format") in FORMATS:
        return "string"
    return None


def merged(base: dict[str, Any], extra: Any, path: SchemaPath) -> Any:
    """``base`` and ``extra`` as one schema; a keyword both set differently is refused."""
    if extra is True:
        return base
    if not isinstance(extra, dict):
        raise GrammarError("Nothing can match this schema.", path)
    merged = dict(base)
    for key, value in extra.items():
        if key in merged and merged[key] != value and key not in ANNOTATIONS:
            if key == "properties":
                merged[key] = {**merged[key], **value}
            elif key == "required":
                merged[key] = [*merged[key], *[v for v in value if v not in merged[key]]]
            else:
                raise GrammarError(f"{key} set twice (in the schema and in a sub-schema).", (*path, key))
        else:
            merged[key] = value
    return merged


def integer_bounds(schema: dict[str, Any], path: SchemaPath) -> str:
    """The integers within the schema's bounds, exclusive ones included."""
    low: int | None = None
    high: int | None = None
    for key in BOUNDS:
        if key not in schema:
            continue
        value = schema[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise GrammarError(f"{key} must be a finite number.", (*path, key))
        if key == "minimum":
            bound, is_low = math.ceil(value), True
        elif key == "exclusiveMinimum":
            bound, is_low = math.floor(value) + 1, True
        elif key == "maximum":
            bound, is_low = math.floor(value), False
        else:
            bound, is_low = math.ceil(value) - 1, False
        if is_low:
            low = bound if low is None else max(low, bound)
        else:
            high = bound if high is None else min(high, bound)
    try:
        return integer_range(low, high)
    except ValueError as exc:
        key = next(k for k in BOUNDS if k in schema)
        raise GrammarError(f"{exc}.", (*path, key)) from None
