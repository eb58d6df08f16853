"""Translation between Sluice's Anthropic-shaped requests and the OpenAI chat-completions API."""

from workers.providers.base import Finished, TextDelta, ThinkingDelta, ToolInputDelta, ToolUseStart
from workers.providers.openai_translate import ChunkTranslator, to_openai_request


def _request(**fields):
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], **fields}


def _chunk(delta=None, finish=None, usage=None):
    chunk = {"model": "up", "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def test_system_and_turns_become_openai_messages():
    """The system prompt comes first; text-only turns become plain strings."""
    request = {
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ],
    }
    body = to_openai_request(request, model="m", max_tokens=7)
    assert body["messages"] == [
        {"role": "system", "content": "Be brief.\nBe kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "a\nb"},
    ]
    assert body["model"] == "m" and body["max_tokens"] == 7 and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_images_become_image_url_parts():
    """An image block becomes an image_url part with a data URL."""
    source = {"type": "base64", "media_type": "image/png", "data": "AAAA"}
    request = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "What?"}, {"type": "image", "source": source}],
            }
        ]
    }
    parts = to_openai_request(request, model="m", max_tokens=1)["messages"][0]["content"]
    assert parts == [
        {"type": "text", "text": "What?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]


def test_tool_use_and_tool_result_turns_become_tool_calls_and_tool_messages():
    """An assistant tool_use becomes tool_calls; a tool_result becomes a tool message before the user text."""
    request = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "sunny"}],
                    },
                    {"type": "text", "text": "Thanks"},
                ],
            },
        ]
    }
    messages = to_openai_request(request, model="m", max_tokens=1)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "t1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    assert messages[2] == {"role": "tool", "tool_call_id": "t1", "content": "sunny"}
    assert messages[3] == {"role": "user", "content": "Thanks"}


def test_a_failed_tool_result_is_marked_as_an_error():
    """``is_error`` survives as an 'Error:' prefix, OpenAI having no such flag."""
    request = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": "boom", "is_error": True}],
            }
        ]
    }
    assert to_openai_request(request, model="m", max_tokens=1)["messages"][0]["content"] == "Error: boom"


def test_tools_and_tool_choice_become_functions():
    """Tools become functions; any → required, tool → that function, parallel use can be disabled."""
    tools = [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]
    body = to_openai_request(
        _request(tools=tools, tool_choice={"type": "any", "disable_parallel_tool_use": True}),
        model="m",
        max_tokens=1,
    )
    assert body["tools"] == [
        {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
    ]
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    named = to_openai_request(
        _request(tools=tools, tool_choice={"type": "tool", "name": "f"}), model="m", max_tokens=1
    )
    assert named["tool_choice"] == {"type": "function", "function": {"name": "f"}}


def test_sampling_seed_priority_and_user_pass_through_and_stops_stay_local():
    """Set sampling fields, seed, priority and user_id are sent; stop sequences are matched locally."""
    body = to_openai_request(
        _request(
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            min_p=0.1,
            seed=7,
            priority=-3,
            presence_penalty=0.5,
            stop_sequences=["END"],
            metadata={"user_id": "u1"},
        ),
        model="m",
        max_tokens=1,
    )
    assert {k: body[k] for k in ("temperature", "top_p", "top_k", "min_p", "seed", "priority", "user")} == {
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.1,
        "seed": 7,
        "priority": -3,
        "user": "u1",
    }
    assert body["presence_penalty"] == 0.5
    assert "stop" not in body and "frequency_penalty" not in body


def test_json_schema_output_becomes_response_format():
    """output_config.format json_schema becomes a strict json_schema response_format."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = to_openai_request(
        _request(output_config={"format": {"type": "json_schema", "schema": schema}}), model="m", max_tokens=1
    )
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


def test_thinking_switch_follows_the_models_option():
    """Thinking reaches the server the way its model options say, and extra_body merges last."""
    request = _request(thinking={"enabled": True, "effort": "high"})
    kwargs = to_openai_request(request, model="m", max_tokens=1, options={"thinking": "chat_template_kwargs"})
    assert kwargs["chat_template_kwargs"] == {"enable_thinking": True}
    effort = to_openai_request(request, model="m", max_tokens=1, options={"thinking": "reasoning_effort"})
    assert effort["reasoning_effort"] == "high"
    extra = to_openai_request(request, model="m", max_tokens=1, options={"extra_body": {"max_tokens": 3}})
    assert extra["max_tokens"] == 3 and "reasoning_effort" not in extra


def test_text_and_reasoning_chunks_become_deltas():
    """content → TextDelta, reasoning_content → ThinkingDelta; the role-only chunk yields nothing."""
    translator = ChunkTranslator()
    assert translator.feed(_chunk({"role": "assistant"})) == []
    assert translator.feed(_chunk({"reasoning_content": "think"})) == [ThinkingDelta("think")]
    assert translator.feed(_chunk({"content": "Hel"})) == [TextDelta("Hel")]
    assert translator.model == "up"


def test_tool_call_chunks_become_tool_use_start_and_input_deltas():
    """A tool call's first chunk opens a tool_use; its argument pieces become input deltas."""
    translator = ChunkTranslator()
    first = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a"'}}
    assert translator.feed(_chunk({"tool_calls": [first]})) == [
        ToolUseStart("call_1", "f"),
        ToolInputDelta('{"a"'),
    ]
    assert translator.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]})) == [
        ToolInputDelta(": 1}")
    ]
    second = {"index": 1, "id": "call_2", "function": {"name": "g", "arguments": "{}"}}
    assert translator.feed(_chunk({"tool_calls": [second]}))[0] == ToolUseStart("call_2", "g")
    translator.feed(_chunk(finish="tool_calls"))
    assert translator.finished().stop_reason == "tool_use"


def test_finish_reasons_and_usage_map_to_the_ending():
    """length → max_tokens, content_filter → refusal; usage gives both token counts."""
    translator = ChunkTranslator()
    translator.feed(_chunk(finish="length"))
    translator.feed({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 5}})
    assert translator.finished() == Finished("max_tokens", 5, 11)
    refused = ChunkTranslator()
    refused.feed(_chunk(finish="content_filter"))
    assert refused.finished().stop_reason == "refusal"


def test_an_error_chunk_raises():
    """An ``error`` object in the stream is a provider error carrying the upstream's message."""
    import pytest

    from workers.providers.base import ProviderError

    with pytest.raises(ProviderError, match="out of memory"):
        ChunkTranslator().feed({"error": {"message": "out of memory"}})


def test_server_dialects_rename_parameters_and_use_json_object():
    """param_names renames, drop_params drops, and json_object sends the schema llama-cpp-python's way."""
    schema = {"type": "object"}
    body = to_openai_request(
        _request(
            repetition_penalty=1.1,
            top_k=5,
            output_config={"format": {"type": "json_schema", "schema": schema}},
        ),
        model="m",
        max_tokens=1,
        options={
            "param_names": {"repetition_penalty": "repeat_penalty", "max_tokens": "max_completion_tokens"},
            "response_format": "json_object",
            "drop_params": ["top_k"],
        },
    )
    assert body["repeat_penalty"] == 1.1 and "repetition_penalty" not in body
    assert body["max_completion_tokens"] == 1 and "max_tokens" not in body and "top_k" not in body
    assert body["response_format"] == {"type": "json_object", "schema": schema}
