"""Validation errors in one shape: ``BodyInvalid`` carrying ``[{loc, msg, type}]``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MESSAGE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

Loc = tuple[str | int, ...]

_TYPE_WORDS = re.compile(r"must be an? (string|object|list|json|number|integer|boolean)")


def error_details(messages: Any, loc: Loc = ()) -> list[dict[str, Any]]:
    """Flatten Marshmallow's nested error dict into ``[{loc, msg, type}]``."""
    details: list[dict[str, Any]] = []
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            sub = loc if key == "_schema" else (*loc, key)
            details.extend(error_details(value, sub))
    elif isinstance(messages, list):
        for item in messages:
            details.extend(error_details(item, loc))
    else:
        text = str(messages)
        details.append({"loc": list(loc), "msg": text, "type": _error_type(text)})
    return details


def _error_type(text: str) -> str:
    lowered = text.lower()
    if "unknown field" in lowered:
        return "extra_forbidden"
    if "missing" in lowered or "required" in lowered:
        return "missing"
    if ("not a valid" in lowered and "json schema" not in lowered) or _TYPE_WORDS.search(lowered):
        return "type_error"
    return "value_error"


def problem(loc: Loc, msg: str, kind: str = "value_error") -> dict[str, Any]:
    """One ``{loc, msg, type}`` entry."""
    return {"loc": list(loc), "msg": msg, "type": kind}


class BodyInvalid(Exception):
    """A body failed validation; ``details`` is the ``[{loc, msg, type}]`` list."""

    def __init__(self, details: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in details))
        self.details = details


def check_message_id(message_id: str) -> None:
    """A caller's own message id: 1-128 chars of ``[A-Za-z0-9_.:-]``."""
    if not MESSAGE_ID_PATTERN.match(message_id):
        raise BodyInvalid(
            [problem(("query", "message_id"), "message_id must be 1-128 characters of [A-Za-z0-9_.:-].")]
        )
