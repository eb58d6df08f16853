"""A small SSE parser for tests: frames as (id, event, data-dict, raw data).

Deliberately separate from the CLI's parser (``cli/client.py``): the tests check the server's
wire format against an oracle of their own, keeping the exact ``event:`` line and raw ``data:``
bytes, where the CLI is lenient (it falls back to the payload's type).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Frame:
    id: str | None
    event: str
    data: dict[str, Any]
    raw_data: str


def parse_lines(lines: Iterable[str]) -> Iterator[Frame]:
    """Frames from the text lines of an SSE response."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if line == "":
            if data or fields:
                raw = "\n".join(data)
                yield Frame(fields.get("id"), fields.get("event", "message"), json.loads(raw), raw)
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
