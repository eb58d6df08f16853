"""Every honoured field changes what the embedded model does, on the real stack."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest

from tests.integration.helpers import body, check_grammar, observe, submit

pytestmark = pytest.mark.integration

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["C", "F"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}
ADD = {
    "name": "add",
    "input_schema": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    },
}


def chat(api: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/messages (stream:false) and return the Message."""
    response = httpx.post(f"{api}/v1/messages", json=payload, timeout=600)  # a shared, loaded CPU
    assert response.status_code == 200, response.text
    message: dict[str, Any] = response.json()
    return message


def text(message: dict[str, Any]) -> str:
    return "".join(block["text"] for block in message["content"] if block["type"] == "text")


def test_same_seed_same_output(live):
    """The same seed and parameters give the same text; another seed gives another."""
    first = chat(live.api, body(max_tokens=24, seed=11))
    again = chat(live.api, body(max_tokens=24, seed=11))
    other = chat(live.api, body(max_tokens=24, seed=12))
    assert text(first) == text(again)
    assert text(first) != text(other)


def test_max_tokens_cuts(live):
    """max_tokens ends the answer there with stop_reason max_tokens."""
    message = chat(live.api, body(max_tokens=5, seed=1))
    assert message["stop_reason"] == "max_tokens"
    assert message["usage"]["output_tokens"] == 5


def test_stop_sequence_cuts(live):
    """A stop sequence taken from the seeded output ends it there, with stop_sequence set."""
    full = text(chat(live.api, body(max_tokens=30, seed=4, temperature=0)))
    word = full.split()[3]
    cut = chat(live.api, body(max_tokens=30, seed=4, temperature=0, stop_sequences=[word]))
    assert cut["stop_reason"] == "stop_sequence" and cut["stop_sequence"] == word
    assert word not in text(cut) and full.startswith(text(cut))


@pytest.mark.parametrize(
    "params",
    [
        {"top_k": 1},
        {"min_p": 0.6},
        {"repetition_penalty": 1.8},
        {"presence_penalty": 1.5},
        {"frequency_penalty": 2},
    ],
    ids=["top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty"],
)
def test_sampling_parameter_changes_output(live, params):
    """Each sampling parameter reaches the sampler: with the same seed, the text changes."""
    base = body("Write a long list of fruits, one per line.", max_tokens=48, seed=21)
    assert text(chat(live.api, base)) != text(chat(live.api, {**base, **params}))


def test_temperature_zero_is_greedy(live):
    """temperature 0 is greedy: two different seeds give the same text."""
    one = chat(live.api, body(max_tokens=20, seed=1, temperature=0))
    two = chat(live.api, body(max_tokens=20, seed=2, temperature=0))
    assert text(one) == text(two)


def test_system_prompt_reaches_the_model(live):
    """A system prompt is rendered into the prompt (input_tokens grow by it) and changes the answer."""
    plain = chat(live.api, body(max_tokens=16, seed=3))
    system = "You are a pirate. Always answer like a pirate, saying Arr. " * 4
    with_system = chat(live.api, body(max_tokens=16, seed=3, system=system))
    assert with_system["usage"]["input_tokens"] > plain["usage"]["input_tokens"] + 5
    assert text(with_system) != text(plain)


def test_multi_turn_history_reaches_the_model(live):
    """Earlier assistant turns are part of the prompt."""
    turns = [
        {"role": "user", "content": "My name is Zorblax."},
        {"role": "assistant", "content": "Nice to meet you, Zorblax!"},
        {"role": "user", "content": "What is my name?"},
    ]
    short = chat(live.api, {"max_tokens": 8, "seed": 1, "messages": turns[2:]})
    full = chat(live.api, {"max_tokens": 8, "seed": 1, "messages": turns})
    assert full["usage"]["input_tokens"] > short["usage"]["input_tokens"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_json_schema_output_validates(live, seed):
    """output_config.format constrains the text to JSON that validates against the schema."""
    fmt = {"format": {"type": "json_schema", "schema": PERSON}}
    message = chat(live.api, body("Invent a person.", max_tokens=200, seed=seed, output_config=fmt))
    assert message["stop_reason"] == "end_turn"
    jsonschema.validate(json.loads(text(message)), PERSON)


def test_response_format_maps_onto_output_config(live):
    """The deprecated response_format json_schema constrains the output the same way."""
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    message = chat(live.api, body("Invent a person.", max_tokens=200, seed=5, response_format=fmt))
    jsonschema.validate(json.loads(text(message)), PERSON)


@pytest.mark.parametrize(
    "choice", [{"type": "any"}, {"type": "tool", "name": "add"}, {"type": "tool", "name": "get_weather"}]
)
def test_forced_tool_call_validates(live, choice):
    """tool_choice any/tool streams a tool_use block whose joined input_json_delta validates."""
    payload = body("What is the weather in Paris? And 2 + 3?", max_tokens=200, seed=2, tools=[WEATHER, ADD])
    message_id = submit(live.api, {**payload, "tool_choice": choice})
    frames = observe(live.api, message_id)
    check_grammar(frames)
    start = next(f.data for f in frames if f.event == "content_block_start")
    block = start["content_block"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    if choice["type"] == "tool":
        assert block["name"] == choice["name"]
    joined = "".join(
        f.data["delta"]["partial_json"]
        for f in frames
        if f.event == "content_block_delta" and f.data["delta"]["type"] == "input_json_delta"
    )
    schema = {"get_weather": WEATHER, "add": ADD}[block["name"]]["input_schema"]
    jsonschema.validate(json.loads(joined), schema)
    assert frames[-2].data["delta"]["stop_reason"] == "tool_use"


def test_auto_tool_call_is_recognised(live):
    """With tool_choice auto, a reply that opens a <tool_call> becomes a well-formed tool_use block."""
    turns = [
        {"role": "user", "content": "Add 2 and 3."},
        {"role": "assistant", "content": "<tool_call>"},  # a prefill: the model continues it
    ]
    message = chat(live.api, {"max_tokens": 100, "seed": 1, "messages": turns, "tools": [WEATHER, ADD]})
    assert message["stop_reason"] == "tool_use"
    call = message["content"][-1]
    assert call["type"] == "tool_use"
    schema = {"get_weather": WEATHER, "add": ADD}[call["name"]]["input_schema"]
    jsonschema.validate(call["input"], schema)


def test_tool_result_turn_is_accepted(live):
    """A full tool round trip (tool_use, then tool_result) runs to a text answer."""
    turns = [
        {"role": "user", "content": "Add 2 and 3."},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "add", "input": {"a": 2, "b": 3}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "5"}]},
    ]
    message = chat(live.api, {"max_tokens": 20, "seed": 1, "messages": turns, "tools": [ADD]})
    assert message["stop_reason"] in {"end_turn", "max_tokens"} and text(message)


@pytest.mark.parametrize(
    "payload",
    [
        body(max_tokens=8),
        body(max_tokens=8, system=["Be brief.", {"type": "text", "text": "Be kind."}]),
        body(max_tokens=8, tools=[WEATHER, ADD], tool_choice={"type": "any"}),
        body(max_tokens=8, output_config={"format": {"type": "json_schema", "schema": PERSON}}),
        {
            "max_tokens": 8,
            "messages": [{"role": "system", "content": "Sys"}, {"role": "user", "content": "Hi"}],
        },
    ],
    ids=["plain", "system", "tools", "json-schema", "system-role"],
)
def test_count_tokens_equals_worker_input_tokens(live, payload):
    """count_tokens answers exactly the input_tokens the worker reports for the same body."""
    counted = httpx.post(f"{live.api}/v1/messages/count_tokens", json=payload, timeout=60)
    assert counted.status_code == 200, counted.text
    message = chat(live.api, payload)
    assert counted.json()["input_tokens"] == message["usage"]["input_tokens"]


def test_models_endpoint_lists_capabilities(live):
    """GET /v1/models/{id} shows what the model honours, ignores and refuses, and its limits."""
    model = httpx.get(f"{live.api}/v1/models/default", timeout=10).json()
    assert "tools" in model["capabilities"]["honoured"]
    assert "thinking" in model["capabilities"]["refused"]
    assert model["limits"]["context_window"] > 0
    listed = httpx.get(f"{live.api}/v1/models", timeout=10).json()
    assert [m["id"] for m in listed["data"]] == ["default"]
    assert httpx.get(f"{live.api}/v1/models/nope", timeout=10).status_code == 404


def test_docs_and_openapi_are_served(live):
    """/openapi.json describes every route and /docs is a self-contained page."""
    document = httpx.get(f"{live.api}/openapi.json", timeout=10).json()
    assert "/v1/messages/count_tokens" in document["paths"]
    assert "ChatBody" in document["components"]["schemas"]
    page = httpx.get(f"{live.api}/docs", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'fetch("/openapi.json")' in page.text and "://" not in page.text  # self-contained: no CDN
