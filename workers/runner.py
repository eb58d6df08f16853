"""Runs one stored message: claim it, pick its provider, run the loop, record the outcome."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from shared import events as ev
from shared.store import ERROR, PENDING, FieldValues, MessageStore
from workers import metrics
from workers.generation import Outcome, run_generation
from workers.runtime import Runtime

log = logging.getLogger("sluice.worker")


@dataclass(frozen=True)
class BoundSink:
    """A ``MessageStore`` bound to one message: the generation loop's sink."""

    store: MessageStore
    message_id: str

    def append(self, events: Sequence[ev.Event], fields: FieldValues | None = None) -> int:
        return self.store.append(self.message_id, events, fields)

    def finish(
        self, status: str, events: Sequence[ev.Event], fields: FieldValues | None = None
    ) -> str | None:
        return self.store.finish(self.message_id, status, events, fields)


def run_message(runtime: Runtime, message_id: str, *, worker: str) -> str:
    """Run ``message_id`` if it is still pending; returns the status it ends with."""
    store = runtime.store
    before = store.claim(message_id, worker)
    if before != PENDING:
        log.info("skip", extra={"message_id": message_id, "status": before})
        return before or "gone"
    status = store.get_status(message_id) or {}
    queue_wait_ms = round((time.time() - float(status.get("created_ts", time.time()))) * 1000, 1)
    sink = BoundSink(store, message_id)
    request = store.get_request(message_id)
    spec = runtime.registry.resolve(status.get("model", "default"))
    if request is None or spec is None:
        reason = "request expired" if request is None else f"unknown model {status.get('model')!r}"
        sink.finish(ERROR, [ev.error("api_error", reason)], {"error_message": reason})
        return ERROR
    store.append(message_id, [], {"queue_wait_ms": queue_wait_ms})
    max_tokens = min(request.get("max_tokens") or spec.default_max_tokens, spec.max_output_tokens)
    outcome: Outcome = run_generation(
        message_id,
        request,
        runtime.provider_for(spec),
        sink,
        max_tokens=max_tokens,
        coalesce_seconds=runtime.settings.coalesce_ms / 1000,
    )
    metrics.record(spec.id, status.get("queue") or spec.queue, queue_wait_ms, outcome)
    log.info(
        "finished",
        extra={"message_id": message_id, "status": outcome.status, "output_tokens": outcome.output_tokens},
    )
    return outcome.status
