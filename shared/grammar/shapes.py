"""The rules of objects, arrays and strings: their required, optional and counted parts.

Optional properties cost linear space (a chain of tails, not all their orderings); counted
items and lengths go through ``RuleSet.repeat`` so their written-out size is budgeted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.grammar.errors import GrammarError, SchemaPath
from shared.grammar.pattern import pattern_expression
from shared.grammar.text import json_literal
from shared.grammar.vocabulary import FORMATS

if TYPE_CHECKING:
    from shared.grammar.gbnf import GbnfBuilder


def object_rule(b: GbnfBuilder, schema: dict[str, Any], path: SchemaPath, hint: str) -> str:
    """The rule of an object: required pairs in order, then optional ones, then extra pairs."""
    props = dict(schema.get("properties") or {})
    required = list(schema.get("required") or [])
    extra = schema.get("additionalProperties")
    for name in required:
        if props.get(name, extra if name not in props else None) is False:
            raise GrammarError(f"{name!r} is required but not allowed.", (*path, "required"))
        if name not in props:
            props[name] = extra if isinstance(extra, dict) else True
    props = {name: sub for name, sub in props.items() if sub is not False}
    if not props and extra in (None, True):
        return b.primitive("object")
    space = b.primitive("space")
    pairs = {}
    for name, sub in props.items():
        value = b.nested(sub, (*path, "properties", name), f"{hint}-{name}")
        pairs[name] = b.add(f"{hint}-{name}-kv", f'{json_literal(name)} ":" {space} {value}')
    required_pairs = [pairs[name] for name in props if name in required]
    optional_pairs = [pairs[name] for name in props if name not in required]
    if extra is True or isinstance(extra, dict):
        value = b.nested(extra, (*path, "additionalProperties"), f"{hint}-extra")
        extra_pair = b.add(f"{hint}-extra-kv", f'{b.primitive("string")} ":" {space} {value}')
    else:
        extra_pair = None
    # tails[i]: optional pairs i.. (each preceded by a comma), then any extra pairs.
    tails: list[str] = [b.add(f"{hint}-extras", f'("," {space} {extra_pair})*') if extra_pair else '""']
    for pair in reversed(optional_pairs):
        tails.insert(0, b.add(f"{hint}-tail", f'("," {space} {pair})? {tails[0]}'))
    if required_pairs:
        inner = f' "," {space} '.join(required_pairs) + " " + tails[0]
    else:
        firsts = [f"{pair} {tails[i + 1]}" for i, pair in enumerate(optional_pairs)]
        if extra_pair:
            firsts.append(f"{extra_pair} {tails[-1]}")
        inner = "(" + " | ".join(firsts) + ")?" if firsts else ""
    return b.add(hint, f'"{{" {space} {inner} "}}"')


def array_rule(b: GbnfBuilder, schema: dict[str, Any], path: SchemaPath, hint: str) -> str:
    """The rule of an array: prefix items, or items counted by minItems/maxItems."""
    space = b.primitive("space")
    low, high = int(schema.get("minItems", 0)), schema.get("maxItems")
    high = None if high is None else int(high)
    if "prefixItems" in schema:
        prefix = schema["prefixItems"]
        if low > len(prefix) or (high is not None and high < len(prefix)):
            raise GrammarError(
                "minItems/maxItems beside prefixItems is not supported.", (*path, "prefixItems")
            )
        items = [b.nested(s, (*path, "prefixItems", i), f"{hint}-{i}") for i, s in enumerate(prefix)]
        return b.add(hint, f'"[" {space} ' + f' "," {space} '.join(items) + ' "]"')
    if schema.get("items") is False or high == 0:
        return b.add(hint, f'"[" {space} "]"')
    item = b.nested(schema.get("items", True), (*path, "items"), f"{hint}-item")
    more = b.repeat(f'"," {space} {item}', max(low - 1, 0), None if high is None else high - 1, path)
    body = f"{item} {more}" if low else f"({item} {more})?"
    return b.add(hint, f'"[" {space} {body} "]"')


def string_rule(b: GbnfBuilder, schema: dict[str, Any], path: SchemaPath, hint: str) -> str:
    """The rule of a string: a pattern, a format, a counted length, or any string."""
    low, high = schema.get("minLength"), schema.get("maxLength")
    counted = low is not None or high is not None
    if "pattern" in schema:
        if counted:
            key = "minLength" if low is not None else "maxLength"
            raise GrammarError(f"{key} beside pattern is not supported.", (*path, key))
        try:
            inner = pattern_expression(schema["pattern"], b.repeat)
        except GrammarError as exc:
            raise GrammarError(str(exc), (*path, "pattern")) from None
        return b.add(hint, f'"\\"" {inner} "\\""')
    if schema.get("format") in FORMATS and not counted:
        return b.add(hint, f'"\\"" {b.primitive(schema["format"])} "\\""')
    if not counted:
        return b.primitive("string")
    key = "maxLength" if high is not None else "minLength"
    chars = b.repeat(b.primitive("char"), int(low or 0), None if high is None else int(high), (*path, key))
    return b.add(hint, f'"\\"" {chars} "\\""')
