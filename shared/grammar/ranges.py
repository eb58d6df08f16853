"""Integer ranges as GBNF: the alternatives that spell exactly the integers in ``[low, high]``.

The idea is llama.cpp's (``_build_min_max_int`` in its JSON-schema converter): split the range
by number of digits, then split each same-length range on its first differing digit into a
low edge, a full middle and a high edge, recursing on the edges. Written here from scratch.
Canonical JSON integers only: no leading zeros, no ``-0``.
"""

from __future__ import annotations

#: Digits an integer may have when a side of its range is open (llama.cpp's integer rule: 16).
MAX_DIGITS = 16
LIMIT = 10**MAX_DIGITS - 1


def _digits(low: int, high: int) -> str:
    return f"[{low}]" if low == high else f"[{low}-{high}]"


def _group(alternatives: list[str]) -> str:
    return alternatives[0] if len(alternatives) == 1 else "(" + " | ".join(alternatives) + ")"


def _seq(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def _same_length(low: str, high: str) -> list[str]:
    """Alternatives for the digit strings of one length from ``low`` to ``high`` (leading zeros allowed)."""
    common = 0
    while common < len(low) and low[common] == high[common]:
        common += 1
    prefix = f'"{low[:common]}"' if common else ""
    low, high = low[common:], high[common:]
    if not low:
        return [prefix]
    if len(low) == 1:
        return [_seq(prefix, _digits(int(low), int(high)))]
    rest = len(low) - 1
    any_rest = "[0-9]" if rest == 1 else f"[0-9]{{{rest}}}"  # one counted repetition per sequence
    first_low, first_high = int(low[0]), int(high[0])
    alternatives = []
    full_from, full_to = first_low, first_high
    if low[1:] != "0" * rest:  # the low edge: the first digit of low, then low's tail up to 9...9
        alternatives.append(_seq(prefix, f'"{low[0]}"', _group(_same_length(low[1:], "9" * rest))))
        full_from += 1
    if high[1:] != "9" * rest:
        full_to -= 1
    if full_from <= full_to:  # the middle: any tail
        alternatives.append(_seq(prefix, _digits(full_from, full_to), any_rest))
    if high[1:] != "9" * rest:  # the high edge: the first digit of high, then 0...0 up to high's tail
        alternatives.append(_seq(prefix, f'"{high[0]}"', _group(_same_length("0" * rest, high[1:]))))
    return alternatives


def _non_negative(low: int, high: int) -> list[str]:
    """Alternatives for the canonical decimals of ``low..high`` (``0 <= low <= high``)."""
    alternatives: list[str] = []
    for length in range(len(str(low)), len(str(high)) + 1):
        start = max(low, 10 ** (length - 1) if length > 1 else 0)
        end = min(high, 10**length - 1)
        if start <= end:
            alternatives.extend(_same_length(str(start), str(end)))
    return alternatives


def integer_range(low: int | None, high: int | None) -> str:
    """A GBNF expression matching exactly the integers ``low..high`` (``None``: open, up to 16 digits)."""
    low = -LIMIT if low is None else low
    high = LIMIT if high is None else high
    if low > high:
        raise ValueError(f"no integer lies between {low} and {high}")
    if max(abs(low), abs(high)) > LIMIT:
        raise ValueError(f"integer bounds beyond ±{LIMIT} cannot be enforced")
    alternatives = []
    if low < 0:
        alternatives.append('"-" ' + _group(_non_negative(max(1, -high), -low)))
    if high >= 0:
        alternatives.extend(_non_negative(max(0, low), high))
    return _group(alternatives)
