"""The scripted provider: deterministic text, thinking, tool calls and errors without a model."""

import pytest

from shared.models import ModelSpec
from workers.providers.base import (
    Finished,
    ProviderError,
    Started,
    TextDelta,
    ThinkingDelta,
    ToolInputDelta,
    ToolUseStart,
)
from workers.providers.scripted import ScriptedProvider, ScriptError

REQUEST = {"messages": [{"role": "user", "content": [{"type": "text", "text": "two words"}]}]}


def _provider(**options):
    return ScriptedProvider.from_spec(ModelSpec(id="s", provider="scripted", options=options))


def test_script_plays_thinking_text_and_a_tool_call_in_order():
    """Each step becomes its provider events, and a tool call ends with stop_reason tool_use."""
    script = [
        {"thinking": "Let me see.", "signature": "sig"},
        {"text": "Calling it."},
        {"tool_use": "weather", "id": "t1", "input": {"city": "Paris"}},
    ]
    events = list(_provider(script=script).stream(REQUEST, 100))
    assert events[0] == Started(2, "s")
    assert events[1:4] == [ThinkingDelta("Let ", 1), ThinkingDelta("me ", 1), ThinkingDelta("see.", 1, "sig")]
    assert events[4:6] == [TextDelta("Calling "), TextDelta("it.")]
    assert events[6] == ToolUseStart("t1", "weather")
    assert "".join(e.partial_json for e in events if isinstance(e, ToolInputDelta)) == '{"city": "Paris"}'
    assert events[-1] == Finished("tool_use")


def test_script_error_step_raises_its_error_type():
    """An error step fails the stream there, with the error type it names."""
    stream = _provider(script=[{"text": "a b"}, {"error": "fell over", "type": "overloaded_error"}]).stream(
        REQUEST, 100
    )
    assert [type(e) for e in (next(stream), next(stream), next(stream))] == [Started, TextDelta, TextDelta]
    with pytest.raises(ProviderError, match="fell over") as caught:
        next(stream)
    assert caught.value.error_type == "overloaded_error"


def test_script_stop_step_and_max_tokens_end_the_stream():
    """A stop step sets the stop reason; max_tokens cuts a longer script."""
    stopped = list(
        _provider(script=[{"text": "a"}, {"stop": "refusal"}, {"text": "never"}]).stream(REQUEST, 10)
    )
    assert stopped[-1] == Finished("refusal") and TextDelta("never") not in stopped
    cut = list(_provider(script=[{"text": "a b c d"}]).stream(REQUEST, 2))
    assert cut[1:] == [TextDelta("a "), TextDelta("b "), Finished("max_tokens")]


def test_text_mode_keeps_its_options():
    """text, repeat and fail_after work as before the script form existed."""
    once = list(_provider(text="x y", repeat=False).stream(REQUEST, 10))
    assert once[1:] == [TextDelta("x "), TextDelta("y"), Finished("end_turn")]
    with pytest.raises(ProviderError, match="after 3 tokens"):
        list(_provider(fail_after=3).stream(REQUEST, 10))


def test_a_bad_script_step_is_refused_when_the_provider_is_built():
    """A step that is none (or two) of the known kinds fails early, naming the step."""
    with pytest.raises(ScriptError, match="step 1"):
        _provider(script=[{"text": "ok"}, {"text": "a", "stop": "end_turn"}])
