"""The one render + tokenize path: system, tools, prefill and history reach the chat template."""

from __future__ import annotations

import pytest

from shared.models import ModelSpec
from shared.schemas import load_chat_body
from shared.tokenizer import count_tokens, render_prompt, vocab_for

SPEC = ModelSpec(id="default", provider="llama_cpp")
TOOL = {"name": "add", "description": "Add two numbers", "input_schema": {"type": "object"}}


def load(**fields):
    return load_chat_body({"messages": [{"role": "user", "content": "Hi there"}], **fields}, {"default"})


@pytest.fixture(scope="module")
def llm():
    return vocab_for(SPEC)


def test_system_is_the_first_turn(llm):
    """A system prompt, in any form, opens the rendered prompt as the system turn."""
    prompt = render_prompt(llm, load(system=[{"type": "text", "text": "Be a pirate."}]))
    assert prompt.startswith("<|im_start|>system\nBe a pirate.<|im_end|>")


def test_system_role_messages_join_the_system_prompt(llm):
    """A system-role message is moved into the system turn, not rendered as its own turn."""
    body = load_chat_body(
        {"messages": [{"role": "system", "content": "Rule one."}, {"role": "user", "content": "Hi"}]},
        {"default"},
    )
    prompt = render_prompt(llm, body)
    assert prompt.count("<|im_start|>system") == 1 and "Rule one." in prompt


def test_tools_are_described_unless_choice_is_none(llm):
    """Tools appear in the system turn with their schema; tool_choice none leaves them out."""
    assert "- add: Add two numbers." in render_prompt(llm, load(tools=[TOOL]))
    assert "add" not in render_prompt(llm, load(tools=[TOOL], tool_choice={"type": "none"}))


def test_json_schema_is_described(llm):
    """output_config.format puts the schema in the system turn."""
    schema = {"type": "object", "properties": {"zzz": {"type": "integer"}}}
    assert '"zzz"' in render_prompt(
        llm, load(output_config={"format": {"type": "json_schema", "schema": schema}})
    )


def test_last_assistant_turn_is_a_prefill(llm):
    """A trailing assistant turn is continued: the prompt ends with its text, not a closed turn."""
    body = load_chat_body(
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Once upon"}]},
        {"default"},
    )
    assert render_prompt(llm, body).endswith("<|im_start|>assistant\nOnce upon")


def test_tool_history_is_rendered(llm):
    """tool_use and tool_result blocks are written as <tool_call> and <tool_response> text."""
    call = {"type": "tool_use", "id": "t1", "name": "add", "input": {"a": 1}}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": "2"}
    body = load_chat_body(
        {
            "messages": [
                {"role": "user", "content": "Add"},
                {"role": "assistant", "content": [call]},
                {"role": "user", "content": [result]},
            ],
            "tools": [TOOL],
        },
        {"default"},
    )
    prompt = render_prompt(llm, body)
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>' in prompt
    assert "<tool_response>\n2\n</tool_response>" in prompt


def test_count_grows_with_the_body():
    """count_tokens counts more tokens for a longer body."""
    assert count_tokens(SPEC, load(system="A long system prompt " * 10)) > count_tokens(SPEC, load()) + 20
