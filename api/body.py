"""Request bodies: read within the size limit (chunked ones too), parse, bound their nesting.

Every endpoint that reads a JSON body goes through ``json_body``, so the limits hold everywhere:
over ``SLUICE_MAX_BODY_BYTES`` is a 413 whether the client sent ``Content-Length`` or
``Transfer-Encoding: chunked`` (a chunked body is read at most one byte past the limit, never
whole), and nesting deeper than ``SLUICE_MAX_JSON_DEPTH`` is a 400, before any schema runs.
"""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from api.errors import InvalidRequest

#: Bytes read from a chunked body at a time.
READ_PIECE = 65_536


def _read_raw() -> bytes:
    """The body's bytes; 413 as soon as more than the limit has arrived."""
    limit: int | None = current_app.config.get("MAX_CONTENT_LENGTH")
    if request.content_length is not None or limit is None:
        return request.get_data(cache=True)  # Werkzeug refuses a Content-Length over the limit
    cached = getattr(g, "sluice_raw_body", None)
    if cached is not None:
        return bytes(cached)
    stream = request.environ["wsgi.input"]  # the server has undone the chunking
    data = bytearray()
    while len(data) <= limit:
        piece = stream.read(min(READ_PIECE, limit + 1 - len(data)))
        if not piece:
            break
        data += piece
    if len(data) > limit:
        raise RequestEntityTooLarge()
    g.sluice_raw_body = bytes(data)
    return g.sluice_raw_body


def depth_exceeded(value: Any, limit: int) -> bool:
    """True when ``value`` nests lists/objects more than ``limit`` levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class BodyTooDeep(InvalidRequest):
    """400: the body nests deeper than the limit. A resource limit, like 413: ``/validate``
    answers it as an error too, not as ``{valid: false}``."""

    def __init__(self, limit: int) -> None:
        text = f"JSON body nests deeper than {limit} levels (SLUICE_MAX_JSON_DEPTH)."
        super().__init__(text, [{"loc": ["body"], "msg": text, "type": "value_error.nesting"}])


def json_body(*, optional: bool = False) -> Any:
    """The request's JSON body; 400 for a wrong content type, malformed or too deeply nested JSON,
    413 when it is over the size limit."""
    raw = _read_raw()
    if optional and not raw.strip():
        return None
    if request.mimetype != "application/json":
        raise InvalidRequest("Content-Type must be application/json.")
    limit: int = current_app.config["SLUICE_MAX_JSON_DEPTH"]
    try:
        parsed = json.loads(raw)
    except RecursionError:  # deeper than the interpreter's own limit, far past ours
        raise BodyTooDeep(limit) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"Malformed JSON body: {exc}") from None
    if depth_exceeded(parsed, limit):
        raise BodyTooDeep(limit)
    g.sluice_body = parsed  # for the request log line, which must not parse the body again
    return parsed
