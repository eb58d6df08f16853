"""Delta coalescing in the writer: same text, fewer appends, first token prompt, on time, cancel seen."""

from __future__ import annotations

import time

from shared import events as ev
from shared.accumulator import accumulate
from shared.store import Signal
from tests.unit.test_generation import REQUEST, ListSink, provider
from workers.generation import Outcome, run_generation
from workers.providers.base import Finished, Started, TextDelta
from workers.providers.scripted import ScriptedProvider
from workers.writer import background_writer, merge_deltas


def _coalesced(sink: ListSink, window: float, prov: ScriptedProvider, max_tokens: int) -> Outcome:
    with background_writer(sink, window) as writer:
        return run_generation("m", REQUEST, prov, writer, max_tokens=max_tokens)


def _text(sink: ListSink) -> str:
    return "".join(e["delta"]["text"] for e in sink.events if e["type"] == "content_block_delta")


def test_coalesced_stream_has_the_same_text_in_fewer_appends():
    """With a window, the deltas are merged: the text and the message are those of the plain run."""
    plain, merged = ListSink(), ListSink()
    run_generation("m", REQUEST, provider(tokens_per_second=2000), plain, max_tokens=60)
    _coalesced(merged, 0.01, provider(tokens_per_second=2000), 60)
    assert _text(merged) == _text(plain)
    assert accumulate(merged.events) == accumulate(plain.events)
    assert merged.appends < plain.appends / 3


def test_first_delta_is_never_held():
    """The first text delta is written on its own append, so coalescing adds nothing to TTFT."""
    sink = ListSink()
    _coalesced(sink, 1.0, provider(tokens_per_second=1000), 30)
    deltas = [e for e in sink.events if e["type"] == "content_block_delta"]
    assert deltas[0]["delta"]["text"] == "The "
    assert len(deltas) == 2  # the first token, then the other 29 held by the long window


class _Paused:
    """Yields two tokens, pauses far longer than the window, and notes what the sink had
    received by the end of the pause."""

    def __init__(self, pause: float, sink: ListSink) -> None:
        self.pause, self.sink = pause, sink
        self.seen_after_pause = ""

    def stream(self, request, max_tokens):
        yield Started(input_tokens=3, model="paused")
        yield TextDelta("one ", 1)
        yield TextDelta("two ", 1)
        time.sleep(self.pause)
        self.seen_after_pause = _text(self.sink)
        yield TextDelta("three", 1)
        yield Finished("end_turn")


def test_a_held_delta_is_written_when_its_window_ends_even_if_the_provider_pauses():
    """The timer runs in the writer: a pause of the provider does not keep a delta back."""
    sink = ListSink()
    paused = _Paused(0.3, sink)
    _coalesced(sink, 0.02, paused, 10)  # type: ignore[arg-type]
    assert paused.seen_after_pause == "one two "
    assert _text(sink) == "one two three"


def test_cancel_is_seen_while_coalescing():
    """A cancel reaches a coalescing loop on its next write and ends the stream well-formed."""
    sink = ListSink(signal_after=3, signal=Signal.CANCEL_ASKED)
    outcome = _coalesced(sink, 0.005, provider(tokens_per_second=2000), 5000)
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
