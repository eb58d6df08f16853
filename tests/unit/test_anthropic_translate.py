"""Translation for the anthropic provider: params out, upstream events back in as provider events."""

import pytest

from workers.providers.anthropic_translate import EventTranslator, to_anthropic_params
from workers.providers.base import (
    Finished,
    ProviderError,
    TextDelta,
    ThinkingDelta,
    ToolInputDelta,
    ToolUseStart,
)

MESSAGES = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]


def test_params_pass_anthropic_fields_and_drop_sluice_ones():
    """Anthropic's own fields pass through; Sluice-only fields (priority, seed, correlation_id) do not."""
    request = {
        "messages": MESSAGES,
        "system": [{"type": "text", "text": "S"}],
        "temperature": 0.5,
        "top_k": 3,
        "priority": 1,
        "seed": 4,
        "correlation_id": "c",
        "stop_sequences": ["x"],
        "metadata": {"user_id": "u", "other": 1},
    }
    params = to_anthropic_params(request, model="claude", max_tokens=50)
    assert params == {
        "model": "claude",
        "max_tokens": 50,
        "messages": MESSAGES,
        "system": [{"type": "text", "text": "S"}],
        "temperature": 0.5,
        "top_k": 3,
        "metadata": {"user_id": "u"},
    }


def test_seed_style_thinking_becomes_a_budget_below_max_tokens():
    """``{enabled, effort}`` becomes ``{type: enabled, budget_tokens}`` that fits under max_tokens."""
    params = to_anthropic_params(
        {"messages": MESSAGES, "thinking": {"enabled": True, "effort": "high"}}, model="m", max_tokens=5000
    )
    assert params["thinking"] == {"type": "enabled", "budget_tokens": 4999}


def _run(events):
    translator = EventTranslator()
    out = []
    for event in events:
        out.extend(translator.feed(event))
    return translator, out


def test_upstream_events_become_provider_events():
    """Text, thinking with signature and tool_use blocks pass through; usage and stop reason are kept."""
    translator, out = _run(
        [
            {"type": "message_start", "message": {"model": "up", "usage": {"input_tokens": 9}}},
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": ""},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "hm"},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": "sig"},
            },
            {"type": "content_block_stop", "index": 0},
            {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Yes"}},
            {"type": "content_block_stop", "index": 1},
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {"type": "tool_use", "id": "t", "name": "f"},
            },
            {
                "type": "content_block_delta",
                "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": "{}"},
            },
            {"type": "content_block_stop", "index": 2},
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 6}},
            {"type": "message_stop"},
        ]
    )
    assert out == [
        ThinkingDelta("hm"),
        ThinkingDelta("", 0, signature="sig"),
        TextDelta("Yes"),
        ToolUseStart("t", "f"),
        ToolInputDelta("{}"),
    ]
    assert translator.model == "up" and translator.input_tokens == 9
    assert translator.finished() == Finished("tool_use", 6, 9)


def test_an_error_event_raises_with_its_type():
    """An upstream ``error`` event becomes a provider error of the same type."""
    with pytest.raises(ProviderError, match="busy") as caught:
        _run([{"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}])
    assert caught.value.error_type == "overloaded_error"


def test_a_stream_cut_before_message_stop_is_an_error():
    """Without message_stop the stream was cut off, which must not pass as a normal end."""
    translator, _ = _run([{"type": "message_start", "message": {"usage": {"input_tokens": 1}}}])
    with pytest.raises(ProviderError, match="cut off"):
        translator.finished()
