"""The background writer: order, merging while a write is in flight, signals, failures."""

from __future__ import annotations

import threading
import time

import pytest

from shared import events as ev
from shared.store import Signal
from tests.unit.test_generation import REQUEST
from workers.generation import SinkUnavailable, run_generation
from workers.providers.scripted import ScriptedProvider
from workers.writer import background_writer


class GatedSink:
    """Records every append as one call; an append can be held until the test lets it go."""

    def __init__(self, answers: list[int] | None = None) -> None:
        self.calls: list[tuple[list, dict]] = []
        self.finished: tuple[str, list] | None = None
        self.answers = answers or []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_next = False

    def append(self, events, fields=None):
        self.entered.set()
        self.gate.wait(5)
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("redis went away")
        self.calls.append((list(events), dict(fields or {})))
        return self.answers[len(self.calls) - 1] if len(self.calls) <= len(self.answers) else Signal.GO_ON

    def finish(self, status, events, fields=None):
        self.finished = (status, list(events))
        return status

    @property
    def written(self) -> list:
        return [e for events, _ in self.calls for e in events]


def _delta(i: int) -> dict:
    return ev.text_delta(0, f"t{i} ")


def test_batches_handed_over_during_a_write_go_out_together_in_order():
    sink = GatedSink()
    with background_writer(sink) as writer:
        sink.gate.clear()
        writer.append([_delta(0)], {"output_tokens": 1})
        assert sink.entered.wait(5)
        for i in range(1, 5):
            writer.append([_delta(i)], {"output_tokens": i + 1})
        sink.gate.set()
        assert writer.finish("completed", [ev.message_stop()]) == "completed"
        assert sink.written == [_delta(i) for i in range(5)]
        assert len(sink.calls) == 2  # the first write, then everything that piled up meanwhile
        assert sink.calls[1][1] == {"output_tokens": 5}  # the newest field value wins
        assert sink.finished == ("completed", [ev.message_stop()])


def test_a_cancel_signal_is_answered_and_what_was_handed_over_is_still_written():
    """A cancel stops the loop, not the writer: every batch handed over reaches the stream, in
    order, so the loop's idea of the open block is the stream's."""
    sink = GatedSink(answers=[Signal.GO_ON, Signal.CANCEL_ASKED])
    with background_writer(sink) as writer:
        writer.append([_delta(0)])
        writer.append([_delta(1)])
        signal = Signal.GO_ON
        for i in range(2, 200):
            signal = writer.append([_delta(i)])
            if signal != Signal.GO_ON:
                break
            time.sleep(0.001)
        assert signal == Signal.CANCEL_ASKED
        assert writer.append([_delta(999)]) == Signal.CANCEL_ASKED
    assert sink.written == [_delta(n) for n in range(i + 1)] + [_delta(999)]


def test_after_gone_nothing_more_is_written():
    """A deleted message takes nothing more: what was queued is dropped, later appends refused."""
    sink = GatedSink(answers=[Signal.GONE])
    with background_writer(sink) as writer:
        sink.gate.clear()
        writer.append([_delta(0)])
        assert sink.entered.wait(5)
        writer.append([_delta(1)])
        sink.gate.set()
        deadline = time.monotonic() + 5
        while writer.append([_delta(2)]) != Signal.GONE and time.monotonic() < deadline:
            time.sleep(0.001)
    assert sink.written == [_delta(0)]


class _CancelBeforeTheBlock(GatedSink):
    """A cancel flag set while the first write (``message_start``) is in flight: that write and
    every later one answer CANCEL_ASKED (as the append script does), and it is slow, so the loop
    hands over the first block's start and deltas meanwhile."""

    def append(self, events, fields=None):
        super().append(events, fields)
        if len(self.calls) == 1:
            time.sleep(0.05)
        return Signal.CANCEL_ASKED


def test_a_cancel_as_a_block_opens_still_ends_well_formed():
    """Every content_block_stop the stream gets closes a block it started, whatever the writer
    had in flight when the cancel was seen."""
    sink = _CancelBeforeTheBlock()
    with background_writer(sink) as writer:
        provider = ScriptedProvider("scripted", text=" ".join(["word"] * 200), tokens_per_second=500)
        outcome = run_generation("msg_1", REQUEST, provider, writer, max_tokens=200)
    assert outcome.status == "cancelled"
    assert sink.finished is not None
    stream = sink.written + sink.finished[1]
    opened: set[int] = set()
    for event in stream:
        if event["type"] == "content_block_start":
            opened.add(event["index"])
        elif event["type"] == "content_block_stop":
            assert event["index"] in opened, stream
            opened.discard(event["index"])
    assert not opened and stream[-1]["type"] == "message_stop"


def test_an_empty_append_waits_for_earlier_writes_and_asks_the_sink():
    sink = GatedSink()
    with background_writer(sink) as writer:
        writer.append([_delta(0)])
        assert writer.append([], None) == Signal.GO_ON
        assert sink.calls[0][0] == [_delta(0)]
        assert sink.calls[-1] == ([], {})


def test_a_failed_write_is_raised_to_the_generation_thread():
    sink = GatedSink()
    with background_writer(sink) as writer:
        sink.fail_next = True
        writer.append([_delta(0)])
        with pytest.raises(ConnectionError):
            writer.finish("completed", [])
        assert sink.finished is None
        assert writer.finish("error", [ev.error("api_error", "redis went away")]) == "error"


def test_a_generation_through_the_writer_stores_every_event():
    """The loop over a writer gives the same stream as over the sink itself."""
    request = REQUEST
    direct = GatedSink()
    run_generation("msg_1", request, ScriptedProvider("scripted"), direct, max_tokens=40)
    background = GatedSink()
    with background_writer(background) as writer:
        outcome = run_generation("msg_1", request, ScriptedProvider("scripted"), writer, max_tokens=40)
    assert outcome.status == "completed", outcome.error_message
    assert background.written == direct.written
    assert background.finished == direct.finished


def test_an_unreachable_store_abandons_the_run_without_an_error_ending():
    """Redis down mid-generation: the run stops (to be resumed later), no error is written."""

    class Unreachable(GatedSink):
        def append(self, events, fields=None):
            if any(e["type"] == "content_block_delta" for e in events):
                raise SinkUnavailable("Connection refused")
            return super().append(events, fields)

    sink = Unreachable()
    with pytest.raises(SinkUnavailable), background_writer(sink) as writer:
        run_generation("msg_1", REQUEST, ScriptedProvider("scripted"), writer, max_tokens=400)
    assert sink.finished is None
