"""Message Batches (Anthropic-compatible): create, retrieve, list, cancel, delete, results."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Response, jsonify, request

from api.auth import current_tenant
from api.errors import ApiError, InvalidRequest
from api.services import Services, services
from shared.batch_body import load_batch_body, parse_batch_json
from shared.batches import CANCELED, ENDED, RESULT_KINDS
from shared.keys import scoped_id
from shared.schemas import problem

#: ``limit`` of the list: default and bounds (Anthropic's).
LIST_DEFAULT, LIST_MAX = 20, 1000


class BatchNotFound(ApiError):
    """404 for an unknown, deleted, expired or another tenant's batch."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(404, f"Message batch {batch_id} not found")


#: The pause between chunks of a batch create: a timer, not ``sleep(0)``, so gevent's loop also
#: polls sockets (a zero sleep runs ready greenlets only, and /health would wait for the whole batch).
PAUSE_SECONDS = 0.001


def _pause() -> None:
    """Let other requests of this API process run (gevent patches ``time.sleep``)."""
    time.sleep(PAUSE_SECONDS)


def batch_body(meta: dict[str, str]) -> dict[str, Any]:
    """The ``MessageBatch`` object for a batch's meta hash; ``results_url`` from the request's host."""
    counts = {kind: int(meta.get(kind) or 0) for kind in RESULT_KINDS}
    ended = meta.get("status") == ENDED
    results_url = (
        f"{request.host_url.rstrip('/')}/v1/messages/batches/{meta['id']}/results" if ended else None
    )
    return {
        "id": meta["id"],
        "type": "message_batch",
        "processing_status": meta.get("status"),
        "request_counts": {"processing": int(meta["total"]) - int(meta.get("done") or 0), **counts},
        "created_at": meta.get("created_at"),
        "ended_at": meta.get("ended_at") or None,
        "expires_at": meta.get("expires_at"),
        "cancel_initiated_at": meta.get("cancel_initiated_at") or None,
        "archived_at": None,
        "results_url": results_url,
    }


def _meta(svc: Services, batch_id: str) -> dict[str, str]:
    meta = svc.batches.get(current_tenant(), batch_id)
    if meta is None:
        raise BatchNotFound(batch_id)
    return meta


def create_batch() -> Response:
    """Validate every request, store them in pipelined chunks, and answer with the batch."""
    svc = services()
    settings = svc.settings
    request.max_content_length = settings.batch_max_body_bytes
    with _collector_paused():
        requests = load_batch_body(
            _batch_json(),
            svc.registry,
            max_requests=settings.batch_max_requests,
            allow_private_urls=settings.upstream_allow_private_urls,
            pause=_pause,
        )
        batch_id = svc.batches.create(current_tenant(), requests, pause=_pause)
        del requests
    return jsonify(batch_body(_meta(svc, batch_id)))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic GC while a batch is decoded and stored: its full passes over a million young
    objects would each hold the process for a few hundred ms; they are garbage by refcount
    once the create is done."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _batch_json() -> Any:
    """The create body's JSON, decoded a chunk of requests at a time (other requests run between)."""
    raw = request.get_data(cache=True)
    if request.mimetype != "application/json":
        raise InvalidRequest("Content-Type must be application/json.")
    try:
        return parse_batch_json(raw.decode(), _pause)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"Malformed JSON body: {exc}") from None


def get_batch(batch_id: str) -> Response:
    """The batch, to poll."""
    return jsonify(batch_body(_meta(services(), batch_id)))


def list_batches() -> Response:
    """The tenant's batches, newest first, paged by ``before_id`` / ``after_id`` / ``limit``."""
    svc = services()
    limit = _limit()
    ids = svc.batches.list_ids(current_tenant())
    before, after = request.args.get("before_id"), request.args.get("after_id")
    if after:
        start = _position(ids, after, "after_id") + 1
        page, has_more = ids[start : start + limit], start + limit < len(ids)
    elif before:
        end = _position(ids, before, "before_id")
        page, has_more = ids[max(0, end - limit) : end], end - limit > 0
    else:
        page, has_more = ids[:limit], limit < len(ids)
    data = [batch_body(meta) for meta in svc.batches.get_many(current_tenant(), page)]
    return jsonify(
        {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


def _limit() -> int:
    raw = request.args.get("limit", str(LIST_DEFAULT))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= LIST_MAX:
        msg = f"limit must be an integer from 1 to {LIST_MAX}."
        raise InvalidRequest(msg, [problem(("query", "limit"), msg)])
    return limit


def _position(ids: list[str], batch_id: str, name: str) -> int:
    try:
        return ids.index(batch_id)
    except ValueError:
        msg = f"{name} {batch_id!r} names no batch of yours."
        raise InvalidRequest(msg, [problem(("query", name), msg)]) from None


def list_batch_requests(batch_id: str) -> Response:
    """A Sluice extension for the observer page: a page of the batch's requests and where each stands."""
    svc = services()
    meta = _meta(svc, batch_id)
    offset = _int_arg("offset", 0, 0, int(meta["total"]))
    limit = _int_arg("limit", 100, 1, LIST_MAX)
    data = svc.batches.requests_page(current_tenant(), batch_id, offset, limit, messages=svc.store.messages)
    return jsonify({"data": data, "offset": offset, "total": int(meta["total"])})


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(request.args.get(name, str(default)))
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        msg = f"{name} must be an integer from {low} to {high}."
        raise InvalidRequest(msg, [problem(("query", name), msg)])
    return value


def cancel_batch(batch_id: str) -> Response:
    """Stop feeding the batch and cancel what is in flight; answers ``canceling`` (or ``ended``)."""
    svc = services()
    tenant = current_tenant()
    _meta(svc, batch_id)
    sid = scoped_id(tenant, batch_id)
    stopped = svc.batches.stop(sid, CANCELED)
    if stopped is not None:
        if stopped.ended:
            svc.outcomes.batch_ended(sid, tenant)
        for message_sid in stopped.inflight:
            svc.store.cancel(message_sid)
            svc.outcomes.message_ended(message_sid)  # a pending one ended just now: record it
    return jsonify(batch_body(_meta(svc, batch_id)))


def delete_batch(batch_id: str) -> Response:
    """Delete an ended batch and its results."""
    svc = services()
    meta = _meta(svc, batch_id)
    if meta.get("status") != ENDED:
        raise InvalidRequest(f"Batch {batch_id} has not ended yet; cancel it first.")
    svc.batches.delete(current_tenant(), batch_id)
    return jsonify({"id": batch_id, "type": "message_batch_deleted"})


def batch_results(batch_id: str) -> Response:
    """The results as JSONL, streamed a page at a time."""
    svc = services()
    meta = _meta(svc, batch_id)
    if meta.get("status") != ENDED:
        raise InvalidRequest(f"Batch {batch_id} has not ended yet; its results are not ready.")
    lines = svc.batches.results(current_tenant(), batch_id, meta)
    return Response(lines, mimetype="application/x-jsonl")
