"""Messages: async submit, observe, status, cancel, delete; and the synchronous endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Response, g, jsonify, request

from api.auth import current_tenant
from api.body import json_body
from api.errors import InvalidRequest, NotFound
from api.limits import holding
from api.services import (
    Services,
    cancel,
    require_status,
    services,
    storage_id,
    submit,
)
from api.sse import SSE_HEADERS, SocketPusher, client_gone, sse_body
from api.status import status_body
from shared.accumulator import Accumulator
from shared.capabilities import load_request
from shared.grammar import SchemaLimits
from shared.models import ModelSpec
from shared.schemas import check_message_id
from shared.streams.contract import START, InvalidCursor, StoredEvent, StreamCursor, Tick, epoch_of

#: How often the synchronous endpoint looks for a vanished client while waiting.
SYNC_POLL_SECONDS = 1.0


def load_chat_request(svc: Services) -> tuple[dict[str, Any], ModelSpec]:
    """The request's ChatBody, validated completely, with this deployment's schema caps."""
    return load_request(
        json_body(),
        svc.registry,
        SchemaLimits.from_settings(svc.settings),
        allow_private_urls=svc.settings.upstream_allow_private_urls,
    )


def _chat_body(svc: Services) -> dict[str, Any]:
    body, _ = load_chat_request(svc)
    return body


def create_async() -> Response:
    """Start a background generation and answer at once with its id."""
    svc = services()
    message_id = request.args.get("message_id")
    if message_id is not None:
        check_message_id(message_id)
    body = _chat_body(svc)
    idempotency_key = request.headers.get("Idempotency-Key")
    submitted = submit(svc, body, message_id, idempotency_key=idempotency_key)
    message_id = submitted.message_id
    g.sluice_message_id = message_id  # for the request log line, which must not parse the answer
    # A repeated Idempotency-Key answers with the first message, which may have moved on.
    status = (svc.store.get_field(submitted.storage_id, "status") if idempotency_key else None) or "pending"
    answer = {"message_id": message_id, "status": status, "message": "Request initiated successfully"}
    # What jsonify writes, without its provider's indirections: this answer is the hot path's.
    return Response(json.dumps(answer, separators=(",", ":")) + "\n", mimetype="application/json")


def _cursor(svc: Services, message_id: str) -> StreamCursor:
    raw = request.headers.get("Last-Event-ID") or request.args.get("after")
    if raw is None:
        return StreamCursor(START)
    try:
        return svc.stream_runtime.check_cursor(message_id, raw)
    except InvalidCursor as exc:
        raise InvalidRequest(
            str(exc), [{"loc": ["cursor"], "msg": str(exc), "type": "value_error"}]
        ) from None


def stream(message_id: str) -> Response:
    """Replay the message's events after the cursor, then tail them live, over SSE."""
    svc = services()
    epoch = epoch_of(require_status(svc, message_id))
    sid = storage_id(message_id)
    cursor = _cursor(svc, sid)
    if cursor.ended:  # resumed after the terminal event: nothing follows, nothing to wait for
        return Response(b"", mimetype="text/event-stream", headers=SSE_HEADERS)
    slot = svc.streams.acquire(current_tenant())  # 429 when the key holds its maximum
    pusher = SocketPusher.for_environ(request.environ)
    chunks = svc.stream_runtime.follow_chunks(
        sid,
        cursor.after,
        idle_seconds=svc.settings.ping_interval_seconds,
        pusher=pusher,
        epoch=epoch,
    )
    on_close = None if slot is None else (lambda _finished: slot.release())
    body = sse_body(holding(slot, chunks), on_close, pusher=pusher)
    return Response(body, mimetype="text/event-stream", headers=SSE_HEADERS)


def status(message_id: str) -> Response:
    """Status and metadata, without consuming events."""
    svc = services()
    return jsonify(status_body(message_id, require_status(svc, message_id)))


def cancel_message(message_id: str) -> Response:
    """Cancel; idempotent, and a terminal message stays as it is."""
    svc = services()
    body = json_body(optional=True)
    if body not in (None, {}):
        raise InvalidRequest(
            "The cancel body, if any, must be {}.",
            [{"loc": ["body"], "msg": "must be {}", "type": "value_error"}],
        )
    final = cancel(svc, message_id)
    return jsonify({"message": "Stream cancelled successfully", "message_id": message_id, "status": final})


def delete_message(message_id: str) -> Response:
    """Delete status, request and events; a running generation stops."""
    svc = services()
    require_status(svc, message_id)  # 404 when unknown or another key's
    if not svc.store.delete(storage_id(message_id)):
        require_status(svc, message_id)  # raises the 404
    return jsonify({"message_id": message_id, "deleted": True})


def create_sync() -> Response:
    """Synchronous chat riding the async path: relay the stream, or return the Message."""
    svc = services()
    body = _chat_body(svc)
    submitted = submit(svc, body)
    message_id, sid, epoch = submitted.message_id, submitted.storage_id, submitted.epoch
    environ = request.environ

    def on_close(finished: bool) -> None:
        if not finished:  # the client left before the end: stop the generation
            svc.store.cancel(sid)

    if body.get("stream"):
        pusher = SocketPusher.for_environ(environ)
        chunks = svc.stream_runtime.follow_chunks(
            sid, START, idle_seconds=svc.settings.ping_interval_seconds, pusher=pusher, epoch=epoch
        )
        return Response(sse_body(chunks, on_close, pusher), mimetype="text/event-stream", headers=SSE_HEADERS)
    acc = Accumulator()
    finished = False
    try:
        events = svc.stream_runtime.follow(sid, START, idle_seconds=SYNC_POLL_SECONDS, epoch=epoch)
        for item in _watching(events, environ, message_id):
            acc.feed(json.loads(item.data))
        finished = acc.done
    finally:
        on_close(finished)
    if acc.error is not None:
        return _stream_error_response(acc)
    return jsonify(acc.message)


def _watching(
    items: Iterator[StoredEvent | Tick], environ: dict[str, Any], message_id: str
) -> Iterator[StoredEvent]:
    """Events of ``items``; stops early when the client has gone away (or the message was deleted)."""
    for item in items:
        if item is Tick.GONE:
            raise NotFound(message_id)
        if isinstance(item, Tick):
            if client_gone(environ):
                return
            continue
        yield item


def _stream_error_response(acc: Accumulator) -> Response:
    assert acc.error is not None
    status = 529 if acc.error.error_type == "overloaded_error" else 500
    response = jsonify(
        {"type": "error", "error": {"type": acc.error.error_type, "message": acc.error.message}}
    )
    response.status_code = status
    return response
