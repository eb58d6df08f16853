"""A JSON Schema ``pattern`` as a GBNF expression over the JSON-encoded characters of a string.

What it translates: literals, escapes (``\\d \\w \\s`` and their negations, ``\\n \\t \\uXXXX``...),
classes, ``.``, groups, ``|``, and ``* + ? {n} {n,} {n,m}`` (lazy or not). What it refuses:
lookarounds, backreferences, word boundaries, anchors inside the pattern. The grammar matches
whole strings, a subset of what a search-semantics pattern allows, so its output always
validates. Characters JSON must escape are produced escaped or left out.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from shared.grammar.errors import GrammarError
from shared.grammar.text import JSON_UNSAFE, char_class, literal, subtract

#: ``repeat(expression, low, high)``: the expression repeated ``low..high`` times (``None``: open).
Repeat = Callable[[str, int, "int | None"], str]

_CLASS_ESCAPES = {
    "d": [(0x30, 0x39)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "s": [(0x09, 0x0A), (0x0D, 0x0D), (0x20, 0x20)],
}
_CHAR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "0": "\0"}
_UNSUPPORTED = {
    "b": "word boundaries",
    "B": "word boundaries",
    "A": "anchors",
    "Z": "anchors",
    "z": "anchors",
}


def _encoded(ch: str) -> str:
    """The GBNF literal of ``ch`` as it appears inside a JSON string (escaped when JSON requires)."""
    return literal(json.dumps(ch, ensure_ascii=False)[1:-1])


def _class(ranges: list[tuple[int, int]], negated: bool) -> str:
    """A class, JSON-safe: raw quotes, backslashes and controls are left out, or produced escaped."""
    if negated:
        return char_class(sorted(ranges) + list(JSON_UNSAFE), negated=True)
    safe = subtract(ranges, JSON_UNSAFE)
    extra = [
        _encoded(chr(code))
        for code in (0x22, 0x5C, 0x09, 0x0A, 0x0D)
        if any(low <= code <= high for low, high in ranges)
    ]
    alternatives = ([char_class(safe)] if safe else []) + extra
    if not alternatives:
        raise GrammarError("a character class that matches nothing a JSON string can hold")
    return alternatives[0] if len(alternatives) == 1 else "(" + " | ".join(alternatives) + ")"


class PatternTranslator:
    """A recursive-descent reader of one pattern that writes GBNF as it goes."""

    def __init__(self, pattern: str, repeat: Repeat) -> None:
        self.src = pattern
        self.pos = 0
        self.repeat = repeat

    def translate(self) -> str:
        """The GBNF expression for the whole pattern (``^``/``$`` at its ends are dropped)."""
        if self.src.startswith("^"):
            self.pos = 1
        end = len(self.src) - 1 if self.src.endswith("$") and not self.src.endswith("\\$") else len(self.src)
        expression = self._alternation(end)
        if self.pos != end:
            raise GrammarError(f"pattern: unexpected {self.src[self.pos]!r} at {self.pos}")
        return expression or '""'

    def _peek(self, end: int) -> str:
        return self.src[self.pos] if self.pos < end else ""

    def _alternation(self, end: int) -> str:
        branches = [self._sequence(end)]
        while self._peek(end) == "|":
            self.pos += 1
            branches.append(self._sequence(end))
        if len(branches) == 1:
            return branches[0]
        return "(" + " | ".join(branch or '""' for branch in branches) + ")"

    def _sequence(self, end: int) -> str:
        items: list[str] = []
        while self._peek(end) not in ("", "|", ")"):
            atom = self._atom(end)
            items.append(self._quantified(atom, end))
        return " ".join(items)

    def _quantified(self, atom: str, end: int) -> str:
        ch = self._peek(end)
        if ch in ("*", "+", "?"):
            self.pos += 1
            result = f"({atom}){ch}"
        elif ch == "{" and self._counted(end) is not None:
            low, high = self._counted(end) or (0, None)
            self.pos = self.src.index("}", self.pos) + 1
            result = self.repeat(atom, low, high)
        else:
            return atom
        if self._peek(end) == "?":  # lazy: the same language
            self.pos += 1
        elif self._peek(end) == "+":
            raise GrammarError("pattern: possessive quantifiers are not supported")
        return result

    def _counted(self, end: int) -> tuple[int, int | None] | None:
        """``(low, high)`` of a ``{n}``, ``{n,}`` or ``{n,m}`` at the cursor, else None (a literal ``{``)."""
        close = self.src.find("}", self.pos, end)
        if close < 0:
            return None
        low, comma, high = self.src[self.pos + 1 : close].partition(",")
        if not low.isdigit() or (high and not high.isdigit()):
            return None
        if high and int(high) < int(low):
            raise GrammarError(f"pattern: {{{low},{high}}} is an empty range")
        return int(low), (int(high) if high else None) if comma else int(low)

    def _atom(self, end: int) -> str:
        ch = self.src[self.pos]
        self.pos += 1
        if ch == "(":
            if self.src.startswith("?:", self.pos):
                self.pos += 2
            elif self._peek(end) == "?":
                raise GrammarError("pattern: lookarounds and named groups are not supported")
            inner = self._alternation(end)
            if self._peek(end) != ")":
                raise GrammarError("pattern: unbalanced parenthesis")
            self.pos += 1
            return f"({inner or chr(34) * 2})"
        if ch == "[":
            return self._bracket(end)
        if ch == ".":
            return _class([], negated=True)
        if ch == "\\":
            return self._escape(end)
        if ch in "^$":
            raise GrammarError("pattern: anchors are supported only at the pattern's ends")
        if ch in "*+?":
            raise GrammarError(f"pattern: nothing to repeat at {self.pos - 1}")
        return _encoded(ch)

    def _escape(self, end: int) -> str:
        ch = self._peek(end)
        if not ch:
            raise GrammarError("pattern: a trailing backslash")
        self.pos += 1
        if ch.lower() in _CLASS_ESCAPES:
            return _class(_CLASS_ESCAPES[ch.lower()], negated=ch.isupper())
        if ch in _UNSUPPORTED:
            raise GrammarError(f"pattern: {_UNSUPPORTED[ch]} (\\{ch}) are not supported")
        if ch.isdigit() and ch != "0":
            raise GrammarError("pattern: backreferences are not supported")
        return _encoded(self._escaped_char(ch))

    def _escaped_char(self, ch: str) -> str:
        if ch in _CHAR_ESCAPES:
            return _CHAR_ESCAPES[ch]
        if ch in "ux":
            width = 4 if ch == "u" else 2
            digits = self.src[self.pos : self.pos + width]
            if len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise GrammarError(f"pattern: a bad \\{ch} escape")
            self.pos += width
            return chr(int(digits, 16))
        if ch.isalnum():
            raise GrammarError(f"pattern: unknown escape \\{ch}")
        return ch

    def _bracket(self, end: int) -> str:
        negated = self._peek(end) == "^"
        self.pos += negated
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            ch = self._peek(end)
            if not ch:
                raise GrammarError("pattern: unterminated character class")
            if ch == "]" and not first:
                self.pos += 1
                break
            first = False
            low = self._class_char(end, ranges)
            if low is None:
                continue
            if self._peek(end) == "-" and self.src[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                high = self._class_char(end, ranges)
                if high is None or high < low:
                    raise GrammarError("pattern: a bad range in a character class")
                ranges.append((low, high))
            else:
                ranges.append((low, low))
        return _class(ranges, negated)

    def _class_char(self, end: int, ranges: list[tuple[int, int]]) -> int | None:
        """The code point at the cursor inside ``[...]``; a class escape adds its ranges and gives None."""
        ch = self.src[self.pos]
        self.pos += 1
        if ch != "\\":
            return ord(ch)
        esc = self._peek(end)
        self.pos += 1
        if esc in _CLASS_ESCAPES:
            ranges.extend(_CLASS_ESCAPES[esc])
            return None
        if esc.lower() in _CLASS_ESCAPES:
            raise GrammarError(f"pattern: \\{esc} inside a character class is not supported")
        if esc == "b":
            return 0x08
        return ord(self._escaped_char(esc))


def pattern_expression(pattern: str, repeat: Repeat) -> str:
    """The GBNF expression matching the JSON-encoded content of strings that match ``pattern``."""
    return PatternTranslator(pattern, repeat).translate()
