"""Event builders and the accumulator agree with each other and with Anthropic's shapes."""

import json

import pytest

from shared import events as ev
from shared.accumulator import StreamError, accumulate


def _stream(texts, stop_reason="end_turn", stop_sequence=None):
    events = [ev.message_start("msg_1", "default", 7), ev.content_block_start(0, ev.text_block())]
    events += [ev.text_delta(0, t) for t in texts]
    events += [
        ev.content_block_stop(0),
        ev.message_delta(stop_reason, stop_sequence, len(texts)),
        ev.message_stop(),
    ]
    return events


def test_accumulated_text_is_the_concatenated_deltas():
    """The Message's text block is exactly the deltas joined."""
    message = accumulate(_stream(["Hel", "lo", " wörld"]))
    assert message["content"] == [{"type": "text", "text": "Hello wörld"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"] == {"input_tokens": 7, "output_tokens": 3}
    assert message["id"] == "msg_1" and message["role"] == "assistant"


def test_stop_sequence_is_carried_into_the_message():
    """message_delta's stop_sequence ends up on the Message."""
    message = accumulate(_stream(["a"], "stop_sequence", "\n\n"))
    assert message["stop_reason"] == "stop_sequence"
    assert message["stop_sequence"] == "\n\n"


def test_tool_use_input_is_parsed_from_json_deltas():
    """input_json_delta fragments become the tool_use block's input."""
    events = [
        ev.message_start("m", "x", 1),
        ev.content_block_start(0, ev.tool_use_block("t1", "f")),
        ev.input_json_delta(0, '{"a": '),
        ev.input_json_delta(0, "[1, 2]}"),
        ev.content_block_stop(0),
        ev.message_delta("tool_use", None, 4),
        ev.message_stop(),
    ]
    message = accumulate(events)
    assert message["content"][0] == {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": [1, 2]}}


def test_error_event_raises_stream_error():
    """An error ending raises with its type and message."""
    with pytest.raises(StreamError) as info:
        accumulate([ev.message_start("m", "x", 1), ev.error("overloaded_error", "busy")])
    assert info.value.error_type == "overloaded_error"
    assert info.value.message == "busy"


def test_encode_is_compact_and_keeps_unicode():
    """Stored JSON has no spaces and non-ASCII text as is."""
    encoded = ev.encode(ev.text_delta(0, "é"))
    assert encoded == '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"é"}}'
    assert json.loads(encoded)["delta"]["text"] == "é"


def test_terminal_types():
    """Only message_stop and error end a stream."""
    assert ev.is_terminal("message_stop") and ev.is_terminal("error")
    assert not ev.is_terminal("message_delta") and not ev.is_terminal("ping")


def test_tool_call_cut_mid_json_keeps_its_partial_input():
    """A tool_use block cut by max_tokens mid-JSON accumulates to input {} plus the raw partial_input."""
    from shared import events as ev
    from shared.accumulator import accumulate

    events = [
        ev.message_start("m", "x", 1),
        ev.content_block_start(0, ev.tool_use_block("toolu_1", "add")),
        ev.input_json_delta(0, '{"a": "tw'),
        ev.content_block_stop(0),
        ev.message_delta("max_tokens", None, 3),
        ev.message_stop(),
    ]
    block = accumulate(events)["content"][0]
    assert block["input"] == {} and block["partial_input"] == '{"a": "tw'


def test_type_is_read_from_the_encoded_prefix():
    """type_of reads every builder's type from its JSON without parsing it, and falls back to parsing."""
    for event in (
        ev.message_start("m", "x", 1),
        ev.text_delta(0, 'quote " here'),
        ev.message_stop(),
        ev.error("api_error", "boom"),
        ev.content_block_stop(3),
    ):
        assert ev.type_of(ev.encode(event)) == event["type"]
    assert ev.type_of('{"index": 0, "type": "content_block_stop"}') == "content_block_stop"
