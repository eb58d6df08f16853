"""The generation loop, without Celery or Redis: a scripted provider and an in-memory sink."""

from __future__ import annotations

from shared.accumulator import accumulate
from shared.models import ModelSpec
from shared.store import Signal
from workers.generation import run_generation
from workers.providers.scripted import ScriptedProvider

REQUEST = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}


class ListSink:
    """Collects events; answers a scripted signal after ``signal_after`` appends."""

    def __init__(self, signal_after: int | None = None, signal: Signal = Signal.CANCEL_ASKED) -> None:
        self.events: list[dict] = []
        self.fields: dict = {}
        self.status: str | None = None
        self.appends = 0
        self.signal_after = signal_after
        self.signal = signal

    def append(self, events, fields=None):
        self.events.extend(events)
        self.fields.update(fields or {})
        self.appends += 1
        if self.signal_after is not None and self.appends > self.signal_after:
            return self.signal
        return Signal.GO_ON

    def finish(self, status, events, fields=None):
        self.events.extend(events)
        self.fields.update(fields or {})
        self.status = status
        return status


def provider(**options) -> ScriptedProvider:
    return ScriptedProvider.from_spec(ModelSpec(id="scripted", provider="scripted", options=options))


def types(sink: ListSink) -> list[str]:
    return [e["type"] for e in sink.events]


def test_completed_stream_has_the_full_grammar():
    """start, one text block with deltas, message_delta with usage, stop."""
    sink = ListSink()
    outcome = run_generation("m", REQUEST, provider(text="a b c", repeat=False), sink, max_tokens=10)
    assert outcome.status == "completed" and sink.status == "completed"
    assert types(sink) == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    message = accumulate(sink.events)
    assert message["content"][0]["text"] == "a b c"
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["output_tokens"] == 3


def test_max_tokens_cuts_with_max_tokens_reason():
    """The token budget ends the message with stop_reason max_tokens."""
    sink = ListSink()
    run_generation("m", REQUEST, provider(text="x y"), sink, max_tokens=5)
    message = accumulate(sink.events)
    assert message["stop_reason"] == "max_tokens"
    assert message["usage"]["output_tokens"] == 5


def test_stop_sequence_cuts_and_is_reported():
    """A stop sequence ends the text right before it."""
    sink = ListSink()
    request = {**REQUEST, "stop_sequences": ["c d"]}
    run_generation("m", request, provider(text="a b c d e", repeat=False), sink, max_tokens=50)
    message = accumulate(sink.events)
    assert message["content"][0]["text"] == "a b "
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "c d")


def test_cancel_closes_the_block_and_stops():
    """When the sink reports a cancel, the stream ends cancelled and well-formed."""
    sink = ListSink(signal_after=3)
    outcome = run_generation("m", REQUEST, provider(), sink, max_tokens=1000)
    assert outcome.status == "cancelled"
    assert types(sink)[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert sink.events[-2]["delta"]["stop_reason"] == "cancelled"
    assert outcome.output_tokens < 10


def test_deleted_message_stops_without_writing_more():
    """GONE from the sink stops the loop and finishes nothing."""
    sink = ListSink(signal_after=2, signal=Signal.GONE)
    outcome = run_generation("m", REQUEST, provider(), sink, max_tokens=1000)
    assert outcome.status == "deleted" and sink.status is None


def test_provider_failure_ends_with_an_error_event():
    """A provider error becomes an error event and status error with its message."""
    sink = ListSink()
    outcome = run_generation("m", REQUEST, provider(fail_after=3), sink, max_tokens=100)
    assert outcome.status == "error" and sink.status == "error"
    assert sink.events[-1]["type"] == "error"
    assert "scripted failure" in sink.fields["error_message"]
    assert sum(1 for t in types(sink) if t in ("message_stop", "error")) == 1


def test_usage_and_timing_fields_are_recorded():
    """The sink receives input/output tokens, ttft and duration."""
    sink = ListSink()
    run_generation("m", REQUEST, provider(text="a b", repeat=False), sink, max_tokens=10)
    assert sink.fields["output_tokens"] == 2
    assert sink.fields["input_tokens"] == 1
    assert "ttft_ms" in sink.fields and "duration_ms" in sink.fields


class BlocksProvider:
    """Thinking, then text, then a tool call."""

    def stream(self, request, max_tokens):
        from workers.providers.base import (
            Finished,
            Started,
            TextDelta,
            ThinkingDelta,
            ToolInputDelta,
            ToolUseStart,
        )

        yield Started(3, "p")
        yield ThinkingDelta("hmm ")
        yield ThinkingDelta("ok", signature="sig")
        yield TextDelta("Calling.")
        yield ToolUseStart("toolu_1", "lookup")
        yield ToolInputDelta('{"q": ')
        yield ToolInputDelta('"x"}')
        yield Finished("tool_use", output_tokens=9)


def test_block_kinds_open_and_close_in_order():
    """Thinking, text and tool_use deltas become three blocks, numbered in order."""
    sink = ListSink()
    run_generation("m", REQUEST, BlocksProvider(), sink, max_tokens=100)
    message = accumulate(sink.events)
    assert message["content"] == [
        {"type": "thinking", "thinking": "hmm ok", "signature": "sig"},
        {"type": "text", "text": "Calling."},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["output_tokens"] == 9
    starts = [e["index"] for e in sink.events if e["type"] == "content_block_start"]
    stops = [e["index"] for e in sink.events if e["type"] == "content_block_stop"]
    assert starts == stops == [0, 1, 2]


class FailingBeforeStart:
    """Fails before saying which model runs (an upstream that never answered)."""

    def stream(self, request, max_tokens):
        from workers.providers.base import ProviderError

        raise ProviderError("upstream unreachable after 3 attempts")
        yield  # a generator


def test_failure_before_start_still_begins_with_message_start():
    """A provider failing before Started gives message_start, then the error: well-formed."""
    sink = ListSink()
    outcome = run_generation("m", {**REQUEST, "model": "gpt"}, FailingBeforeStart(), sink, max_tokens=10)
    assert outcome.status == "error"
    assert types(sink) == ["message_start", "error"]
    assert sink.events[0]["message"]["model"] == "gpt"


def test_failure_mid_block_closes_the_block_before_the_error():
    """An error while a text block is open closes it, then ends with the error event."""
    sink = ListSink()
    run_generation("m", REQUEST, provider(fail_after=3), sink, max_tokens=100)
    assert types(sink)[-2:] == ["content_block_stop", "error"]
    assert sum(t == "content_block_start" for t in types(sink)) == 1


class WaitsForFirstToken:
    """Waits (cancellably) for a first token that never comes, like a slow upstream."""

    def stream(self, request, max_tokens):
        from workers.providers.base import wait_cancellable

        wait_cancellable(30.0)
        raise AssertionError("the wait should have been cancelled")
        yield  # a generator


def test_cancel_while_a_provider_waits_ends_cancelled_and_well_formed():
    """A cancel seen by a waiting provider ends the stream cancelled, message_start included."""
    sink = ListSink(signal_after=2)  # the third probe reports the cancel
    outcome = run_generation("m", REQUEST, WaitsForFirstToken(), sink, max_tokens=10)
    assert outcome.status == "cancelled"
    assert types(sink) == ["message_start", "message_delta", "message_stop"]
    assert sink.events[1]["delta"]["stop_reason"] == "cancelled"


def test_delete_while_a_provider_waits_stops_without_writing():
    """A deleted message stops a waiting provider and nothing more is written."""
    sink = ListSink(signal_after=1, signal=Signal.GONE)
    outcome = run_generation("m", REQUEST, WaitsForFirstToken(), sink, max_tokens=10)
    assert outcome.status == "deleted" and sink.status is None
