"""The openai provider against a real third-party server: llama-cpp-python's OpenAI-compatible one."""

from __future__ import annotations

import json

import pytest

from shared.models import ModelSpec
from tests.integration.upstreams import LLAMA_ALIAS, LLAMA_SERVER_OPTIONS, llama_server  # noqa: F401
from tests.unit.test_generation import ListSink
from workers.generation import run_generation
from workers.providers.base import Finished, Started, TextDelta
from workers.providers.openai import OpenAIProvider

pytestmark = pytest.mark.integration


def chat(text: str, **fields):
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": text}]}], **fields}


@pytest.fixture
def provider(llama_server: str) -> OpenAIProvider:  # noqa: F811
    spec = ModelSpec(
        id="upstream",
        provider="openai",
        base_url=llama_server,
        upstream_model=LLAMA_ALIAS,
        options=LLAMA_SERVER_OPTIONS,
    )
    return OpenAIProvider.from_spec(spec)


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_streams_text_from_the_server(provider):
    """The server's tokens arrive as text deltas between Started and a max_tokens Finished."""
    events = list(provider.stream(chat("Tell me a story about a cat.", seed=1), 12))
    assert isinstance(events[0], Started) and events[0].model == LLAMA_ALIAS
    assert text_of(events).strip()
    assert events[-1].stop_reason == "max_tokens" and isinstance(events[-1], Finished)


def test_the_same_seed_gives_the_same_text(provider):
    """The seed reaches the server: with it, sampling at temperature 1 repeats itself.

    The first request of a prompt runs cold and later ones reuse the server's prompt cache,
    which changes the numbers slightly; so the comparison starts after one warm-up request.
    """
    request = chat("Name a colour.", seed=42, temperature=1.0)
    list(provider.stream(request, 16))
    first = text_of(provider.stream(request, 16))
    assert first and text_of(provider.stream(request, 16)) == first


def test_json_schema_output_is_valid_json_of_the_schema(provider):
    """output_config.format constrains the server's output to the schema."""
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    request = chat(
        "Describe a person as JSON.",
        seed=3,
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    document = json.loads(text_of(provider.stream(request, 200)))
    assert isinstance(document["name"], str) and isinstance(document["age"], int)


def test_stop_sequences_end_with_stop_sequence(provider):
    """Hitting a stop sequence ends with stop_reason stop_sequence, the match set, and the text before it."""
    sink = ListSink()
    outcome = run_generation(
        "m1", chat("Write a long sentence.", seed=5, stop_sequences=["e"]), provider, sink, max_tokens=200
    )
    assert outcome.status == "completed" and outcome.stop_reason == "stop_sequence"
    delta = next(e for e in sink.events if e["type"] == "message_delta")
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "e"}
    text = "".join(e["delta"].get("text", "") for e in sink.events if e["type"] == "content_block_delta")
    assert "e" not in text


def test_cancel_mid_stream_ends_well_formed(provider):
    """A cancel seen by the loop closes the upstream stream and ends with stop_reason cancelled."""
    sink = ListSink(signal_after=3)
    outcome = run_generation("m2", chat("Tell me a long story.", seed=7), provider, sink, max_tokens=500)
    assert outcome.status == "cancelled"
    assert [e["type"] for e in sink.events][-2:] == ["message_delta", "message_stop"]
    assert outcome.output_tokens < 500
