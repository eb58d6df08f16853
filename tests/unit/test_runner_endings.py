"""The runner's early endings go through the one ending builder: well-formed whatever was written."""

import json
from types import SimpleNamespace

from shared import events as ev
from shared.accumulator import accumulate
from shared.ending import Ending
from shared.models import ModelRegistry, ModelSpec
from shared.store import ClaimOutcome, MessageStore, Status
from shared.streams.reads import StreamReads
from workers.resume import resume_state
from workers.runner import BoundSink, _end_abandoned, _run_claimed

REGISTRY = ModelRegistry([ModelSpec(id="default", provider="scripted")])


def _claimed(store: MessageStore, message_id: str = "m1"):
    store.create(message_id, {"model": "default", "messages": []}, {"model": "default"})
    claim = store.claim(message_id, "w", owner="w", lease_ms=60_000, max_resumes=1)
    assert claim.outcome is ClaimOutcome.START
    return claim, BoundSink(store, message_id, owner="w", lease_ms=60_000)


def _types(store: MessageStore, message_id: str = "m1") -> list[str]:
    return [event.type for event in StreamReads(store.messages).replay(message_id)]


def test_a_cancel_found_after_a_lost_worker_closes_the_open_block(store: MessageStore):
    """Text written into an open block, then the run is abandoned as cancelled: the block is
    closed, the usage is the stored progress, and the stream accumulates to a Message."""
    _, sink = _claimed(store)
    written = [
        ev.message_start("m1", "default", 3),
        ev.content_block_start(0, ev.text_block()),
        ev.text_delta(0, "hi"),
    ]
    store.append("m1", written, {"output_tokens": 2}, owner="w", lease_ms=60_000)
    state = resume_state(StreamReads(store.messages).replay("m1"))
    assert _end_abandoned(sink, state, Ending.cancelled()) == Status.CANCELLED
    assert _types(store)[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    message = accumulate(_decoded(store))
    assert message["stop_reason"] == "cancelled" and message["usage"]["output_tokens"] == 2


def test_an_expired_request_ends_with_message_start_first(store: MessageStore):
    """A claimed message whose request is gone ends as an error that is still well-formed."""
    claim, sink = _claimed(store)
    expired = SimpleNamespace(outcome=claim.outcome, status=claim.status, request=None)
    runtime = SimpleNamespace(store=store, registry=REGISTRY)
    outcome = _run_claimed(runtime, sink, expired, "w")  # type: ignore[arg-type]
    assert outcome.status == Status.ERROR and outcome.error_message == "request expired"
    assert _types(store) == ["message_start", "error"]
    assert store.get_field("m1", "error_message") == "request expired"


def _decoded(store: MessageStore, message_id: str = "m1") -> list[dict]:
    return [json.loads(event.data) for event in StreamReads(store.messages).replay(message_id)]
