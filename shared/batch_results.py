"""The result of one batch request, as a line of the batch's JSONL results."""

from __future__ import annotations

import json

from shared.accumulator import StreamError, accumulate
from shared.keys import public_id
from shared.store import MessageStore
from shared.streams.reads import StreamReads

#: Result kinds, as the results file and ``request_counts`` name them.
SUCCEEDED, ERRORED, CANCELED, EXPIRED = "succeeded", "errored", "canceled", "expired"
RESULT_KINDS = (SUCCEEDED, ERRORED, CANCELED, EXPIRED)


def result_line(store: MessageStore, message_sid: str, status: dict[str, str] | None) -> tuple[str, str]:
    """(kind, result JSON) of a batch message that ended (or vanished: ``status`` None)."""
    if status is None:
        return ERRORED, errored_line("the request's message was deleted or expired before it ended")
    state = status.get("status")
    if state == "cancelled":
        return CANCELED, json.dumps({"type": CANCELED})
    if state == "error":
        return ERRORED, errored_line(status.get("error_message") or "generation failed")
    try:
        message = accumulate(json.loads(e.data) for e in StreamReads(store.messages).replay(message_sid))
    except StreamError as exc:
        return ERRORED, errored_line(exc.message, exc.error_type)
    message["id"] = public_id(message_sid)
    return SUCCEEDED, json.dumps({"type": SUCCEEDED, "message": message}, separators=(",", ":"))


def errored_line(message: str, error_type: str = "api_error") -> str:
    """An ``errored`` result line."""
    return json.dumps(
        {"type": ERRORED, "error": {"type": "error", "error": {"type": error_type, "message": message}}}
    )
