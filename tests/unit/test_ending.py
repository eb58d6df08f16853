"""The well-formed ending, built once: what is added for each state of the stream and each end."""

from shared import events as ev
from shared.accumulator import Accumulator, StreamError, accumulate
from shared.ending import Ending, StreamSoFar, ending_events


def _types(events: list[ev.Event]) -> list[str]:
    return [event["type"] for event in events]


def test_cancelled_ending_closes_the_open_block():
    """A cancel mid-block closes it before message_delta and message_stop."""
    so_far = StreamSoFar("m1", "x", started=True, open_block=0, output_tokens=5)
    ending = ending_events(so_far, Ending.cancelled())
    assert _types(ending) == ["content_block_stop", "message_delta", "message_stop"]
    assert ending[0]["index"] == 0
    assert ending[1]["delta"]["stop_reason"] == "cancelled"
    assert ending[1]["usage"]["output_tokens"] == 5
    between_blocks = ending_events(StreamSoFar("m1", "x", started=True), Ending.cancelled())
    assert _types(between_blocks) == ["message_delta", "message_stop"]


def test_a_stream_without_message_start_gets_one_first():
    """Cancelled or failed before anything was written: message_start comes first, with the
    public id, the model and the prompt count given."""
    so_far = StreamSoFar("tenant/m1", "small", started=False, input_tokens=7)
    cancelled = ending_events(so_far, Ending.cancelled())
    assert _types(cancelled) == ["message_start", "message_delta", "message_stop"]
    start = cancelled[0]["message"]
    assert (start["id"], start["model"], start["usage"]["input_tokens"]) == ("m1", "small", 7)
    failed = ending_events(so_far, Ending.error("overloaded_error", "busy"))
    assert _types(failed) == ["message_start", "error"]
    assert failed[1]["error"] == {"type": "overloaded_error", "message": "busy"}


def test_an_error_ending_writes_held_events_before_closing_the_block():
    """Events produced but not written go out first, then the close, then the error."""
    held = [ev.text_delta(1, "late")]
    so_far = StreamSoFar("m1", "x", started=True, open_block=1, held=held)
    ending = ending_events(so_far, Ending.error("api_error", "boom"))
    assert _types(ending) == ["content_block_delta", "content_block_stop", "error"]
    assert ending[1]["index"] == 1


def test_every_ending_makes_a_well_formed_stream():
    """Whatever was written (nothing, an open block, a closed one), stream + ending accumulates
    to a Message (cancelled) or raises the error (failed), with exactly one terminal event."""
    written_states = [
        ([], StreamSoFar("m1", "x", started=False)),
        ([ev.message_start("m1", "x", 1)], StreamSoFar("m1", "x", started=True)),
        (
            [
                ev.message_start("m1", "x", 1),
                ev.content_block_start(0, ev.text_block()),
                ev.text_delta(0, "hi"),
            ],
            StreamSoFar("m1", "x", started=True, open_block=0, output_tokens=1),
        ),
    ]
    for written, so_far in written_states:
        stream = written + ending_events(so_far, Ending.cancelled())
        assert stream[0]["type"] == "message_start"
        assert sum(ev.is_terminal(e["type"]) for e in stream) == 1 and ev.is_terminal(stream[-1]["type"])
        message = accumulate(stream)
        assert message["stop_reason"] == "cancelled"
        failed = written + ending_events(so_far, Ending.error("api_error", "boom"))
        acc = Accumulator()
        for event in failed:
            acc.feed(event)
        assert isinstance(acc.error, StreamError) and acc.error.message == "boom"
        assert failed[0]["type"] == "message_start"
