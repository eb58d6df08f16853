"""Validation of a batch create body: every request's ``params`` as a full ChatBody, errors located
at ``["requests", i, "params", ...]``, before anything is stored."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from shared.batch_model import BatchRequest
from shared.capabilities import load_request
from shared.models import ModelRegistry
from shared.schemas import BodyInvalid, problem

CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Requests validated between two ``pause()`` calls (other greenlets of the API process run there).
VALIDATE_CHUNK = 200
#: At most this many problems are reported; one is enough to refuse the batch.
MAX_PROBLEMS = 100


#: ``{"requests": [`` at the start of a body: the shape ``parse_batch_json`` reads item by item.
_HEAD = re.compile(r'\s*\{\s*"requests"\s*:\s*\[')
_SPACE = re.compile(r"\s*")
#: Items decoded between two ``pause()`` calls.
DECODE_CHUNK = 500


def parse_batch_json(text: str, pause: Callable[[], None] = lambda: None) -> Any:
    """The body's JSON, decoded a request at a time with ``pause()`` between chunks when it is
    ``{"requests": [...]}`` (one ``json.loads`` of 10 MB holds a process for most of a second);
    any other shape is decoded whole. ``ValueError`` for malformed JSON, as ``json.loads``."""
    head = _HEAD.match(text)
    if head is None:
        return json.loads(text)
    decoder = json.JSONDecoder()
    items: list[Any] = []
    at = _SPACE.match(text, head.end()).end()  # type: ignore[union-attr]  # \s* always matches
    if text.startswith("]", at):
        at += 1
    else:
        while True:
            item, at = decoder.raw_decode(text, at)
            items.append(item)
            if len(items) % DECODE_CHUNK == 0:
                pause()
            at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
            if text.startswith(",", at):
                at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
                continue
            if text.startswith("]", at):
                at += 1
                break
            return json.loads(text)  # not a plain list after all: let json say where it breaks
    rest = text[at:].strip()
    if rest == "}":
        return {"requests": items}
    return json.loads(text)  # more keys after the list (refused later) or malformed


def load_batch_body(
    payload: Any,
    registry: ModelRegistry,
    *,
    max_requests: int,
    allow_private_urls: bool = False,
    pause: Callable[[], None] = lambda: None,
) -> list[BatchRequest]:
    """The batch's requests, each validated like ``/v1/messages``; ``BodyInvalid`` for any problem."""
    if not isinstance(payload, dict):
        raise BodyInvalid([problem((), "The body must be a JSON object.", "type_error")])
    unknown = sorted(set(payload) - {"requests"})
    if unknown:
        raise BodyInvalid([problem((name,), "Unknown field.", "extra_forbidden") for name in unknown])
    items = payload.get("requests")
    if not isinstance(items, list) or not items:
        raise BodyInvalid([problem(("requests",), "requests must be a non-empty list.", "type_error")])
    if len(items) > max_requests:
        raise BodyInvalid(
            [
                problem(
                    ("requests",), f"At most {max_requests} requests per batch (SLUICE_BATCH_MAX_REQUESTS)."
                )
            ]
        )
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    loaded: list[BatchRequest] = []
    for index, item in enumerate(items):
        if index % VALIDATE_CHUNK == VALIDATE_CHUNK - 1:
            pause()
        found = _load_one(index, item, registry, seen, allow_private_urls)
        if isinstance(found, BatchRequest):
            loaded.append(found)
        else:
            problems.extend(found)
            if len(problems) >= MAX_PROBLEMS:
                break
    if problems:
        raise BodyInvalid(problems[:MAX_PROBLEMS])
    return loaded


def _load_one(
    index: int, item: Any, registry: ModelRegistry, seen: set[str], allow_private_urls: bool
) -> BatchRequest | list[dict[str, Any]]:
    at = ("requests", index)
    if not isinstance(item, dict):
        return [problem(at, "Each request must be an object {custom_id, params}.", "type_error")]
    problems = [
        problem((*at, name), "Unknown field.", "extra_forbidden")
        for name in sorted(set(item) - {"custom_id", "params"})
    ]
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
        problems.append(problem((*at, "custom_id"), "custom_id must be 1-64 characters of [A-Za-z0-9_-]."))
    elif custom_id in seen:
        problems.append(problem((*at, "custom_id"), f"custom_id {custom_id!r} is used twice in this batch."))
    else:
        seen.add(custom_id)
    params = item.get("params")
    if not isinstance(params, dict):
        problems.append(problem((*at, "params"), "params must be a ChatBody object.", "type_error"))
        return problems
    if params.get("stream") not in (None, False):
        problems.append(problem((*at, "params", "stream"), "stream must be absent or false in a batch."))
    try:
        body, _ = load_request(params, registry, allow_private_urls=allow_private_urls)
    except BodyInvalid as exc:
        problems.extend({**d, "loc": [*at, "params", *d["loc"]]} for d in exc.details)
        return problems
    return problems or BatchRequest(str(custom_id), body)
