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


def test_a_cancel_signal_is_answered_and_nothing_more_is_written():
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
        writer.append([_delta(999)])
    assert _delta(999) not in sink.written
    assert sink.written[:2] == [_delta(0), _delta(1)]


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
