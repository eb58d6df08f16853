"""JSON Schema → GBNF for llama.cpp: a grammar whose every sentence is a JSON value of the schema.

Written for Sluice (llama.cpp's converter shows the approach): the grammar may accept a
subset of a schema's instances, never more. A keyword it cannot enforce is refused with its
path. Its cost is bounded as it is built: counted repetitions get a rule of their own (the
engine multiplies counts within one sequence and refuses products over 2000), optional
properties cost linear space (a chain of tails, not all their orderings), and the size of
the grammar with every repetition written out is kept under ``max_grammar_bytes``.
"""

from __future__ import annotations

import re
from typing import Any

from jsonschema import Draft202012Validator
from referencing.exceptions import Unresolvable

from shared.grammar.errors import GrammarError, SchemaPath, SchemaTooCostly
from shared.grammar.limits import ENGINE_MAX_REPEAT, SchemaLimits
from shared.grammar.pattern import pattern_expression
from shared.grammar.text import json_literal
from shared.grammar.vocabulary import (
    ANNOTATIONS,
    BOUNDS,
    FORMATS,
    PRIMITIVES,
    UNENFORCED,
    implied_type,
    integer_bounds,
    merged,
    of_type,
)

_NAME = re.compile(r"[^a-zA-Z0-9-]+")


class GbnfBuilder:
    """One schema's grammar under construction: its rules and its size with repetitions written out."""

    def __init__(self, root: Any, limits: SchemaLimits) -> None:
        self.root = root
        self.limits = limits
        self.rules: dict[str, str] = {}
        self._by_body: dict[str, str] = {}
        self._refs: dict[str, str] = {}
        self._suffixes: dict[str, int] = {}
        #: References being visited with no JSON written since (a loop among them: left recursion).
        self._unconsumed: set[str] = set()
        self.size = 0
        self._depth = 0

    def grammar(self) -> str:
        """The whole grammar, ``root`` first."""
        root = self.visit(self.root, ())
        lines = [f"root ::= {root}"] + [f"{name} ::= {body}" for name, body in self.rules.items()]
        return "\n".join(lines) + "\n"

    def _grow(self, amount: int) -> None:
        self.size += amount
        if self.size > self.limits.max_grammar_bytes:
            raise SchemaTooCostly(
                f"The grammar for this schema is over {self.limits.max_grammar_bytes} bytes "
                "(SLUICE_GRAMMAR_MAX_BYTES)."
            )

    def _name(self, hint: str) -> str:
        base = _NAME.sub("-", hint).strip("-")[:40] or "r"
        name, index = base, self._suffixes.get(base, 1)
        while name in self.rules or name in PRIMITIVES or name == "root":
            name, index = f"{base}-{index}", index + 1
        self._suffixes[base] = index
        return name

    def add(self, hint: str, body: str) -> str:
        """A rule for ``body`` (the same body shares one rule); its name."""
        if body in self._by_body:
            return self._by_body[body]
        if body in self.rules:  # the body is a bare rule name
            return body
        name = self._name(hint)
        self.rules[name] = body
        self._by_body[body] = name
        self._grow(len(name) + len(body) + 5)
        return name

    def primitive(self, name: str) -> str:
        """A built-in rule (and the rules it uses)."""
        if name not in self.rules:
            body, deps = PRIMITIVES[name]
            self.rules[name] = body
            self._grow(len(name) + len(body) + 5)
            for dep in deps:
                self.primitive(dep)
        return name

    def repeat(self, expression: str, low: int, high: int | None, path: SchemaPath = ()) -> str:
        """``expression`` repeated ``low..high`` times, in a rule of its own when counted."""
        cap = min(self.limits.max_repeat, ENGINE_MAX_REPEAT)
        if low > cap or (high is not None and high > cap):
            raise SchemaTooCostly(f"A repetition over {cap} (SLUICE_SCHEMA_MAX_REPEAT).", path)
        if high == 0:
            return '""'
        if (low, high) == (0, None):
            return f"({expression})*"
        if (low, high) == (1, None):
            return f"({expression})+"
        if (low, high) == (0, 1):
            return f"({expression})?"
        counts = f"{low}" if low == high else f"{low},{'' if high is None else high}"
        body = f"({expression}){{{counts}}}"
        if body not in self._by_body:  # llama.cpp writes each repetition out once per rule
            self._grow(max(low, high or 0) * (len(expression) + 8))
        return self.add("rep", body)

    def visit(self, schema: Any, path: SchemaPath, hint: str = "root") -> str:
        """The rule (or short expression) for the JSON values of ``schema``."""
        self._depth += 1
        try:
            if self._depth > self.limits.max_depth:
                raise SchemaTooCostly(
                    f"Schemas nest (through $ref) deeper than {self.limits.max_depth} "
                    "(SLUICE_SCHEMA_MAX_DEPTH).",
                    path,
                )
            return self._visit(schema, path, hint)
        finally:
            self._depth -= 1

    def _visit(self, schema: Any, path: SchemaPath, hint: str) -> str:
        if schema is True or schema == {}:
            return self.primitive("value")
        if not isinstance(schema, dict):
            raise GrammarError("Nothing can match this schema.", path)
        for key in sorted(UNENFORCED & set(schema)):
            raise GrammarError(f"A grammar cannot enforce {key}.", (*path, key))
        if schema.get("uniqueItems"):
            raise GrammarError("A grammar cannot enforce uniqueItems.", (*path, "uniqueItems"))
        if "$ref" in schema:
            self._alone(schema, "$ref", path)
            return self._ref(schema["$ref"], path)
        if "allOf" in schema:
            return self.visit(self._all_of(schema, path), path, hint)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                rest = {k: v for k, v in schema.items() if k != key}
                alternatives = [
                    self.visit(merged(rest, alt, (*path, key, i)), (*path, key, i), f"{hint}-{i}")
                    for i, alt in enumerate(schema[key])
                ]
                return self.add(hint, " | ".join(alternatives))
        if "const" in schema or "enum" in schema:
            return self._values(schema, path, hint)
        kind = schema.get("type")
        if isinstance(kind, list):
            if not kind:
                raise GrammarError("An empty type list matches nothing.", (*path, "type"))
            alternatives = [self.visit(of_type(schema, t), path, f"{hint}-{t}") for t in kind]
            return self.add(hint, " | ".join(alternatives))
        for key in BOUNDS:
            if key in schema and kind != "integer":
                raise GrammarError(f"A grammar can enforce {key} only on integers.", (*path, key))
        kind = kind or implied_type(schema)
        if kind == "object":
            return self._object(schema, path, hint)
        if kind == "array":
            return self._array(schema, path, hint)
        if kind == "string":
            return self._string(schema, path, hint)
        if kind == "integer" and any(key in schema for key in BOUNDS):
            return self.add(hint, integer_bounds(schema, path))
        if kind in ("integer", "number", "boolean", "null"):
            return self.primitive(kind)
        return self.primitive("value")

    def _alone(self, schema: dict[str, Any], key: str, path: SchemaPath) -> None:
        for other in schema:
            if other != key and other not in ANNOTATIONS:
                raise GrammarError(f"{other} beside {key} is not supported.", (*path, other))

    def _target(self, ref: Any, path: SchemaPath) -> tuple[Any, SchemaPath]:
        """The sub-schema a local ``$ref`` points at, and its own path in the root schema."""
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise GrammarError("Only local references (#/...) are supported.", (*path, "$ref"))
        if ref in self._unconsumed:  # the engine refuses left recursion; so does JSON Schema sense
            raise GrammarError(f"{ref!r} refers back to itself before any JSON is written.", (*path, "$ref"))
        target: Any = self.root
        at: SchemaPath = ()
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target, at = target[part], (*at, part)
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target, at = target[int(part)], (*at, int(part))
            else:
                raise GrammarError(f"Unresolvable reference {ref!r}.", (*path, "$ref"))
        return target, at

    def _ref(self, ref: Any, path: SchemaPath) -> str:
        target, at = self._target(ref, path)
        if ref in self._refs:
            return self._refs[ref]
        name = self._refs[ref] = self._name("ref-" + ref.rsplit("/", 1)[-1])
        self.rules[name] = ""  # reserved: a recursive reference (inside an object or array) finds it
        self._unconsumed.add(ref)
        try:
            body = self.visit(target, at, name)  # a problem inside is reported where it is written
        finally:
            self._unconsumed.discard(ref)
        self.rules[name] = body
        self._grow(len(name) + len(body) + 5)
        return name

    def _resolve(self, schema: Any, path: SchemaPath) -> Any:
        """``schema`` with its ``$ref`` chain followed (for ``allOf``, which merges what it finds)."""
        seen: set[str] = set()
        while isinstance(schema, dict) and "$ref" in schema:
            self._alone(schema, "$ref", path)
            ref = schema["$ref"]
            if ref in seen:
                raise GrammarError(
                    f"{ref!r} refers back to itself before any JSON is written.", (*path, "$ref")
                )
            seen.add(ref)
            schema, path = self._target(ref, path)
        return schema

    def _nested(self, schema: Any, path: SchemaPath, hint: str) -> str:
        """A sub-schema inside an object or array: JSON has been written, so recursion is fine."""
        outer, self._unconsumed = self._unconsumed, set()
        try:
            return self.visit(schema, path, hint)
        finally:
            self._unconsumed = outer

    def _all_of(self, schema: dict[str, Any], path: SchemaPath) -> dict[str, Any]:
        combined = {k: v for k, v in schema.items() if k != "allOf"}
        for i, part in enumerate(schema["allOf"]):
            combined = merged(combined, self._resolve(part, (*path, "allOf", i)), (*path, "allOf", i))
        return combined

    def _values(self, schema: dict[str, Any], path: SchemaPath, hint: str) -> str:
        values = [schema["const"]] if "const" in schema else list(schema["enum"])
        rest = {k: v for k, v in schema.items() if k not in ("const", "enum") and k not in ANNOTATIONS}
        if rest:  # a value must satisfy the rest of the schema too
            defs = {
                k: self.root[k]
                for k in ("$defs", "definitions")
                if isinstance(self.root, dict) and k in self.root
            }
            check = Draft202012Validator({**rest, **defs})
            try:
                values = [v for v in values if check.is_valid(v)]
            except Unresolvable:
                raise GrammarError("enum/const beside a $ref outside $defs is not supported.", path) from None
        if not values:
            raise GrammarError("No value of enum/const satisfies this schema.", path)
        try:
            return self.add(hint, " | ".join(json_literal(v) for v in values))
        except ValueError:  # NaN or Infinity: Python's JSON reader lets them in, JSON has no such values
            raise GrammarError("enum/const values must be JSON (no NaN or Infinity).", path) from None

    def _object(self, schema: dict[str, Any], path: SchemaPath, hint: str) -> str:
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
            return self.primitive("object")
        space = self.primitive("space")
        pairs = {}
        for name, sub in props.items():
            value = self._nested(sub, (*path, "properties", name), f"{hint}-{name}")
            pairs[name] = self.add(f"{hint}-{name}-kv", f'{json_literal(name)} ":" {space} {value}')
        required_pairs = [pairs[name] for name in props if name in required]
        optional_pairs = [pairs[name] for name in props if name not in required]
        if extra is True or isinstance(extra, dict):
            value = self._nested(extra, (*path, "additionalProperties"), f"{hint}-extra")
            extra_pair = self.add(f"{hint}-extra-kv", f'{self.primitive("string")} ":" {space} {value}')
        else:
            extra_pair = None
        # tails[i]: optional pairs i.. (each preceded by a comma), then any extra pairs.
        tails: list[str] = [
            self.add(f"{hint}-extras", f'("," {space} {extra_pair})*') if extra_pair else '""'
        ]
        for pair in reversed(optional_pairs):
            tails.insert(0, self.add(f"{hint}-tail", f'("," {space} {pair})? {tails[0]}'))
        if required_pairs:
            inner = f' "," {space} '.join(required_pairs) + " " + tails[0]
        else:
            firsts = [f"{pair} {tails[i + 1]}" for i, pair in enumerate(optional_pairs)]
            if extra_pair:
                firsts.append(f"{extra_pair} {tails[-1]}")
            inner = "(" + " | ".join(firsts) + ")?" if firsts else ""
        return self.add(hint, f'"{{" {space} {inner} "}}"')

    def _array(self, schema: dict[str, Any], path: SchemaPath, hint: str) -> str:
        space = self.primitive("space")
        low, high = int(schema.get("minItems", 0)), schema.get("maxItems")
        high = None if high is None else int(high)
        if "prefixItems" in schema:
            prefix = schema["prefixItems"]
            if low > len(prefix) or (high is not None and high < len(prefix)):
                raise GrammarError(
                    "minItems/maxItems beside prefixItems is not supported.", (*path, "prefixItems")
                )
            items = [self._nested(s, (*path, "prefixItems", i), f"{hint}-{i}") for i, s in enumerate(prefix)]
            return self.add(hint, f'"[" {space} ' + f' "," {space} '.join(items) + ' "]"')
        if schema.get("items") is False or high == 0:
            return self.add(hint, f'"[" {space} "]"')
        item = self._nested(schema.get("items", True), (*path, "items"), f"{hint}-item")
        more = self.repeat(f'"," {space} {item}', max(low - 1, 0), None if high is None else high - 1, path)
        body = f"{item} {more}" if low else f"({item} {more})?"
        return self.add(hint, f'"[" {space} {body} "]"')

    def _string(self, schema: dict[str, Any], path: SchemaPath, hint: str) -> str:
        low, high = schema.get("minLength"), schema.get("maxLength")
        counted = low is not None or high is not None
        if "pattern" in schema:
            if counted:
                key = "minLength" if low is not None else "maxLength"
                raise GrammarError(f"{key} beside pattern is not supported.", (*path, key))
            try:
                inner = pattern_expression(schema["pattern"], lambda e, lo, hi: self.repeat(e, lo, hi))
            except GrammarError as exc:
                raise GrammarError(str(exc), (*path, "pattern")) from None
            return self.add(hint, f'"\\"" {inner} "\\""')
        if schema.get("format") in FORMATS and not counted:
            return self.add(hint, f'"\\"" {self.primitive(schema["format"])} "\\""')
        if not counted:
            return self.primitive("string")
        key = "maxLength" if high is not None else "minLength"
        chars = self.repeat(
            self.primitive("char"), int(low or 0), None if high is None else int(high), (*path, key)
        )
        return self.add(hint, f'"\\"" {chars} "\\""')


def schema_grammar_text(schema: Any, limits: SchemaLimits | None = None) -> str:
    """The GBNF grammar of ``schema``'s JSON values; ``GrammarError`` (with a path) when it cannot be."""
    return GbnfBuilder(schema, limits or SchemaLimits()).grammar()
