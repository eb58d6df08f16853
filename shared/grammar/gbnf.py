"""JSON Schema → GBNF for llama.cpp: a grammar whose every sentence is a JSON value of the schema.

Written for Sluice (llama.cpp's converter shows the approach): the grammar may accept a
subset of a schema's instances, never more. A keyword it cannot enforce is refused with its
path. Its cost is bounded as it is built: counted repetitions get a rule of their own (the
engine multiplies counts within one sequence and refuses products over 2000), optional
properties cost linear space (a chain of tails, not all their orderings), and the size of
the grammar with every repetition written out is kept under ``max_grammar_bytes``.

This module walks the schema (combinators, ``$ref``, ``enum``/``const``, types); the rules
of objects, arrays and strings are in ``shapes``, the rule bookkeeping and budget in ``rules``.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from referencing.exceptions import Unresolvable

from shared.grammar.errors import GrammarError, SchemaPath, SchemaTooCostly
from shared.grammar.limits import SchemaLimits
from shared.grammar.rules import RuleSet
from shared.grammar.shapes import array_rule, object_rule, string_rule
from shared.grammar.text import json_literal
from shared.grammar.vocabulary import (
    ANNOTATIONS,
    BOUNDS,
    UNENFORCED,
    implied_type,
    integer_bounds,
    merged,
    of_type,
)


class GbnfBuilder(RuleSet):
    """One schema's grammar under construction: the walk over the schema, with its references."""

    def __init__(self, root: Any, limits: SchemaLimits) -> None:
        super().__init__(limits)
        self.root = root
        self._refs: dict[str, str] = {}
        #: References being visited with no JSON written since (a loop among them: left recursion).
        self._unconsumed: set[str] = set()
        self._depth = 0

    def grammar(self) -> str:
        """The whole grammar, ``root`` first."""
        return self.text(self.visit(self.root, ()))

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
            return object_rule(self, schema, path, hint)
        if kind == "array":
            return array_rule(self, schema, path, hint)
        if kind == "string":
            return string_rule(self, schema, path, hint)
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
        name = self._refs[ref] = self.name("ref-" + ref.rsplit("/", 1)[-1])
        self.rules[name] = ""  # reserved: a recursive reference (inside an object or array) finds it
        self._unconsumed.add(ref)
        try:
            body = self.visit(target, at, name)  # a problem inside is reported where it is written
        finally:
            self._unconsumed.discard(ref)
        self.rules[name] = body
        self.grow(len(name) + len(body) + 5)
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

    def nested(self, schema: Any, path: SchemaPath, hint: str) -> str:
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


def schema_grammar_text(schema: Any, limits: SchemaLimits | None = None) -> str:
    """The GBNF grammar of ``schema``'s JSON values; ``GrammarError`` (with a path) when it cannot be."""
    return GbnfBuilder(schema, limits or SchemaLimits()).grammar()
