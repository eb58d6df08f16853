"""Delta coalescing in the generation loop: same text, fewer appends, first token prompt, cancel seen."""

from __future__ import annotations

from shared import events as ev
from shared.accumulator import accumulate
from tests.unit.test_generation import REQUEST, ListSink, provider
from workers.generation import CANCEL_ASKED, merge_deltas, run_generation


def _text(sink: ListSink) -> str:
    return "".join(e["delta"]["text"] for e in sink.events if e["type"] == "content_block_delta")


def test_coalesced_stream_has_the_same_text_in_fewer_appends():
    """With a window, the deltas are merged: the text and the message are those of the plain run."""
    plain, merged = ListSink(), ListSink()
    run_generation("m", REQUEST, provider(tokens_per_second=2000), plain, max_tokens=60)
    run_generation(
        "m", REQUEST, provider(tokens_per_second=2000), merged, max_tokens=60, coalesce_seconds=0.01
    )
    assert _text(merged) == _text(plain)
    assert accumulate(merged.events) == accumulate(plain.events)
    assert merged.appends < plain.appends / 3


def test_first_delta_is_never_held():
    """The first text delta is written on its own append, so coalescing adds nothing to TTFT."""
    sink = ListSink()
    run_generation("m", REQUEST, provider(tokens_per_second=1000), sink, max_tokens=30, coalesce_seconds=1.0)
    deltas = [e for e in sink.events if e["type"] == "content_block_delta"]
    assert deltas[0]["delta"]["text"] == "The "
    assert len(deltas) == 2  # the first token, then the other 29 held by the long window


def test_cancel_is_seen_while_coalescing():
    """A cancel reaches a coalescing loop on its next write and ends the stream well-formed."""
    sink = ListSink(signal_after=3, signal=CANCEL_ASKED)
    outcome = run_generation(
        "m", REQUEST, provider(tokens_per_second=2000), sink, max_tokens=5000, coalesce_seconds=0.005
    )
    assert outcome.status == "cancelled"
    assert outcome.output_tokens < 200
    assert [e["type"] for e in sink.events[-2:]] == ["message_delta", "message_stop"]


def test_merge_keeps_blocks_and_kinds_apart():
    """Only adjacent deltas of one block and one kind merge."""
    events = [
        ev.text_delta(0, "a"),
        ev.text_delta(0, "b"),
        ev.content_block_stop(0),
        ev.thinking_delta(1, "x"),
        ev.signature_delta(1, "s"),
        ev.thinking_delta(1, "y"),
        ev.thinking_delta(1, "z"),
    ]
    merged = merge_deltas(events)
    assert [e.get("delta") for e in merged] == [
        {"type": "text_delta", "text": "ab"},
        None,
        {"type": "thinking_delta", "thinking": "x"},
        {"type": "signature_delta", "signature": "s"},
        {"type": "thinking_delta", "thinking": "yz"},
    ]
