"""A GBNF grammar's rules under construction: unique names, one rule per body, a size budget.

The size counts the grammar as llama.cpp holds it, with every counted repetition written out,
so a schema whose grammar would be too big is refused while it is built (``SchemaTooCostly``).
"""

from __future__ import annotations

import re

from shared.grammar.errors import SchemaPath, SchemaTooCostly
from shared.grammar.limits import ENGINE_MAX_REPEAT, SchemaLimits
from shared.grammar.vocabulary import PRIMITIVES

_NAME = re.compile(r"[^a-zA-Z0-9-]+")


class RuleSet:
    """A grammar's rules under construction, shared by body, and its size with repetitions written out."""

    def __init__(self, limits: SchemaLimits) -> None:
        self.limits = limits
        self.rules: dict[str, str] = {}
        self._by_body: dict[str, str] = {}
        self._suffixes: dict[str, int] = {}
        self.size = 0

    def text(self, root: str) -> str:
        """The whole grammar, ``root ::= root`` first."""
        lines = [f"root ::= {root}"] + [f"{name} ::= {body}" for name, body in self.rules.items()]
        return "\n".join(lines) + "\n"

    def grow(self, amount: int) -> None:
        """Count ``amount`` more bytes of written-out grammar; ``SchemaTooCostly`` over the limit."""
        self.size += amount
        if self.size > self.limits.max_grammar_bytes:
            raise SchemaTooCostly(
                f"The grammar for this schema is over {self.limits.max_grammar_bytes} bytes "
                "(SLUICE_GRAMMAR_MAX_BYTES)."
            )

    def name(self, hint: str) -> str:
        """A new rule name from ``hint`` (GBNF characters only, made unique)."""
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
        name = self.name(hint)
        self.rules[name] = body
        self._by_body[body] = name
        self.grow(len(name) + len(body) + 5)
        return name

    def primitive(self, name: str) -> str:
        """A built-in rule (and the rules it uses)."""
        if name not in self.rules:
            body, deps = PRIMITIVES[name]
            self.rules[name] = body
            self.grow(len(name) + len(body) + 5)
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
            self.grow(max(low, high or 0) * (len(expression) + 8))
        return self.add("rep", body)
