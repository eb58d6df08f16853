"""GBNF spelling: literals and character classes, escaped so llama.cpp's parser reads them back exactly."""

from __future__ import annotations

import json

#: Code points a JSON string may not hold raw: the quote, the backslash and the C0 controls.
JSON_UNSAFE = ((0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C))


_CLASS_SPECIAL = "]\\-^["


def _hex(code: int) -> str:
    if code < 0x100:
        return f"\\x{code:02X}"
    if code < 0x10000:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"


def _char(ch: str, special: str) -> str:
    code = ord(ch)
    return _hex(code) if ch in special or code < 0x20 or code == 0x7F else ch


def literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    return '"' + "".join(_char(ch, '"\\') for ch in text) + '"'


def json_literal(value: object) -> str:
    """The compact JSON text of ``value`` as a GBNF literal."""
    return literal(json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False))


def char_class(ranges: list[tuple[int, int]], negated: bool = False) -> str:
    """A GBNF character class of the code-point ``ranges`` (inclusive)."""
    body = []
    for low, high in ranges:
        first, last = _char(chr(low), _CLASS_SPECIAL), _char(chr(high), _CLASS_SPECIAL)
        body.append(first if low == high else f"{first}-{last}")
    return "[" + ("^" if negated else "") + "".join(body) + "]"


def subtract(ranges: list[tuple[int, int]], removed: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    """``ranges`` without the code points of ``removed``."""
    result = list(ranges)
    for cut_low, cut_high in removed:
        kept: list[tuple[int, int]] = []
        for low, high in result:
            if high < cut_low or low > cut_high:
                kept.append((low, high))
                continue
            if low < cut_low:
                kept.append((low, cut_low - 1))
            if high > cut_high:
                kept.append((cut_high + 1, high))
        result = kept
    return result
