"""Every bad body gets a 400 in Anthropic's envelope whose detail points at the exact field.

The app runs in-process with Redis on a port nothing listens on: a body that got as
far as being stored would fail differently, so each 400 also proves nothing was stored.
"""

from __future__ import annotations

from typing import Any

import pytest

from api.app import create_app
from shared.settings import Settings

USER = [{"role": "user", "content": "hi"}]
TOOL = {"name": "get_weather", "input_schema": {"type": "object"}}
SCHEMA = {"type": "object"}
CALL = {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}


def b(**fields: Any) -> dict[str, Any]:
    """A valid body with ``fields`` overriding it."""
    return {"model": "default", "max_tokens": 16, "messages": USER, **fields}


def msgs(*messages: dict[str, Any]) -> dict[str, Any]:
    return b(messages=list(messages))


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


CASES: list[tuple[str, Any, list[Any]]] = [
    ("unknown top-level field", b(temprature=0.5), ["temprature"]),
    ("messages missing", {"model": "default"}, ["messages"]),
    ("messages empty", b(messages=[]), ["messages"]),
    ("messages not a list", b(messages="hi"), ["messages"]),
    ("message not an object", b(messages=["hi"]), ["messages", 0]),
    ("role missing", msgs({"content": "hi"}), ["messages", 0, "role"]),
    ("role unknown", msgs({"role": "tool", "content": "hi"}), ["messages", 0, "role"]),
    ("content missing", msgs({"role": "user"}), ["messages", 0, "content"]),
    ("content empty string", msgs(user("")), ["messages", 0, "content"]),
    ("content empty list", msgs(user([])), ["messages", 0, "content"]),
    ("content a number", msgs(user(3)), ["messages", 0, "content"]),
    ("unknown message field", msgs({"role": "user", "content": "hi", "name": "x"}), ["messages", 0, "name"]),
    ("block not an object", msgs(user(["hi"])), ["messages", 0, "content", 0]),
    ("block type unknown", msgs(user([{"type": "video"}])), ["messages", 0, "content", 0, "type"]),
    ("text block empty", msgs(user([{"type": "text", "text": ""}])), ["messages", 0, "content", 0, "text"]),
    ("text block text missing", msgs(user([{"type": "text"}])), ["messages", 0, "content", 0, "text"]),
    (
        "text in third message",
        msgs(user("a"), assistant("b"), user([{"type": "text", "text": 5}])),
        ["messages", 2, "content", 0, "text"],
    ),
    (
        "text block unknown field",
        msgs(user([{"type": "text", "text": "a", "bold": True}])),
        ["messages", 0, "content", 0, "bold"],
    ),
    (
        "image source missing",
        msgs(user([{"type": "image"}])),
        ["messages", 0, "content", 0, "source"],
    ),
    (
        "image media type",
        msgs(
            user([{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AA"}}])
        ),
        ["messages", 0, "content", 0, "source", "media_type"],
    ),
    (
        "image url not a url",
        msgs(user([{"type": "image", "source": {"type": "url", "url": "nope"}}])),
        ["messages", 0, "content", 0, "source", "url"],
    ),
    (
        "document pdf wrong media type",
        msgs(
            user([{"type": "document", "source": {"type": "base64", "media_type": "text/html", "data": "x"}}])
        ),
        ["messages", 0, "content", 0, "source", "media_type"],
    ),
    (
        "document source type unknown",
        msgs(user([{"type": "document", "source": {"type": "ftp"}}])),
        ["messages", 0, "content", 0, "source", "type"],
    ),
    ("tool_use in a user turn", msgs(user([CALL])), ["messages", 0, "content", 0]),
    (
        "tool_use input not an object",
        msgs(user("a"), assistant([{**CALL, "input": []}])),
        ["messages", 1, "content", 0, "input"],
    ),
    (
        "tool_use id missing",
        msgs(user("a"), assistant([{"type": "tool_use", "name": "x", "input": {}}])),
        ["messages", 1, "content", 0, "id"],
    ),
    (
        "tool_use ids not unique",
        msgs(user("a"), assistant([CALL, CALL])),
        ["messages", 1, "content", 1, "id"],
    ),
    (
        "tool_result answers nothing",
        msgs(user([{"type": "tool_result", "tool_use_id": "nope", "content": "x"}])),
        ["messages", 0, "content", 0, "tool_use_id"],
    ),
    (
        "tool_result in an assistant turn",
        msgs(user("a"), assistant([CALL]), assistant([{"type": "tool_result", "tool_use_id": "t1"}])),
        ["messages", 2, "content", 0],
    ),
    (
        "tool_result is_error not a bool",
        msgs(
            user("a"), assistant([CALL]), user([{"type": "tool_result", "tool_use_id": "t1", "is_error": 1}])
        ),
        ["messages", 2, "content", 0, "is_error"],
    ),
    (
        "thinking block in a user turn",
        msgs(user([{"type": "thinking", "thinking": "x", "signature": "s"}])),
        ["messages", 0, "content", 0],
    ),
    (
        "thinking block without signature",
        msgs(user("a"), assistant([{"type": "thinking", "thinking": "x"}])),
        ["messages", 1, "content", 0, "signature"],
    ),
    (
        "redacted_thinking without data",
        msgs(user("a"), assistant([{"type": "redacted_thinking"}])),
        ["messages", 1, "content", 0, "data"],
    ),
    (
        "block cache_control type",
        msgs(user([{"type": "text", "text": "a", "cache_control": {"type": "forever"}}])),
        ["messages", 0, "content", 0, "cache_control", "type"],
    ),
    (
        "image in a system message",
        msgs(
            {"role": "system", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]},
            user("a"),
        ),
        ["messages", 0, "content", 0],
    ),
    ("only system messages", msgs({"role": "system", "content": "be nice"}), ["messages"]),
    ("model empty", b(model=""), ["model"]),
    ("model unknown", b(model="gpt-99"), ["model"]),
    ("model not a string", b(model=7), ["model"]),
    ("max_tokens zero", b(max_tokens=0), ["max_tokens"]),
    ("max_tokens a string", b(max_tokens="16"), ["max_tokens"]),
    ("max_tokens a float", b(max_tokens=1.5), ["max_tokens"]),
    ("max_tokens a bool", b(max_tokens=True), ["max_tokens"]),
    ("max_tokens over the model's limit", b(max_tokens=10**6), ["max_tokens"]),
    ("system a number", b(system=3), ["system"]),
    ("system list item bad", b(system=["ok", 4]), ["system", 1]),
    ("system object without text", b(system={"type": "text"}), ["system", "text"]),
    ("system object wrong type", b(system={"type": "image", "text": "x"}), ["system", "type"]),
    ("stream not a bool", b(stream="yes"), ["stream"]),
    ("temperature above 1", b(temperature=1.5), ["temperature"]),
    ("temperature negative", b(temperature=-0.1), ["temperature"]),
    ("temperature a string", b(temperature="0.5"), ["temperature"]),
    ("top_p above 1", b(top_p=2), ["top_p"]),
    ("top_k negative", b(top_k=-1), ["top_k"]),
    ("top_k a float", b(top_k=2.5), ["top_k"]),
    ("min_p above 1", b(min_p=1.1), ["min_p"]),
    ("repetition_penalty zero", b(repetition_penalty=0), ["repetition_penalty"]),
    ("presence_penalty above 2", b(presence_penalty=3), ["presence_penalty"]),
    ("frequency_penalty below -2", b(frequency_penalty=-3), ["frequency_penalty"]),
    ("seed a float", b(seed=1.5), ["seed"]),
    ("priority a string", b(priority="high"), ["priority"]),
    ("stop_sequences not a list", b(stop_sequences="END"), ["stop_sequences"]),
    ("stop sequence empty", b(stop_sequences=["ok", ""]), ["stop_sequences", 1]),
    ("too many stop sequences", b(stop_sequences=[str(i) for i in range(17)]), ["stop_sequences"]),
    ("metadata not an object", b(metadata="x"), ["metadata"]),
    ("metadata user_id too long", b(metadata={"user_id": "u" * 513}), ["metadata", "user_id"]),
    ("service_tier unknown", b(service_tier="priority"), ["service_tier"]),
    ("inference_geo a number", b(inference_geo=1), ["inference_geo"]),
    ("correlation_id too long", b(correlation_id="c" * 257), ["correlation_id"]),
    ("maximum_loaded_skills zero", b(maximum_loaded_skills=0), ["maximum_loaded_skills"]),
    ("container a number", b(container=5), ["container"]),
    ("cache_control ttl", b(cache_control={"type": "ephemeral", "ttl": "2h"}), ["cache_control", "ttl"]),
    ("tools not a list", b(tools={"name": "x"}), ["tools"]),
    ("tool name missing", b(tools=[{"description": "x"}]), ["tools", 0, "name"]),
    ("tool name with spaces", b(tools=[{"name": "get weather"}]), ["tools", 0, "name"]),
    ("tool names not unique", b(tools=[TOOL, TOOL]), ["tools", 1, "name"]),
    (
        "tool input_schema invalid",
        b(tools=[{"name": "a", "input_schema": {"type": 5}}]),
        ["tools", 0, "input_schema"],
    ),
    ("tool unknown field", b(tools=[{**TOOL, "strict_mode": True}]), ["tools", 0, "strict_mode"]),
    ("tool_choice type unknown", b(tools=[TOOL], tool_choice={"type": "some"}), ["tool_choice", "type"]),
    ("tool_choice tool without name", b(tools=[TOOL], tool_choice={"type": "tool"}), ["tool_choice", "name"]),
    (
        "tool_choice names a missing tool",
        b(tools=[TOOL], tool_choice={"type": "tool", "name": "other"}),
        ["tool_choice", "name"],
    ),
    ("tool_choice any without tools", b(tool_choice={"type": "any"}), ["tool_choice", "type"]),
    (
        "disable_parallel_tool_use not a bool",
        b(tools=[TOOL], tool_choice={"type": "auto", "disable_parallel_tool_use": "no"}),
        ["tool_choice", "disable_parallel_tool_use"],
    ),
    ("tool_context without tools", b(tool_context=[{"type": "x"}]), ["tool_context"]),
    ("tool_context entry without type", b(tools=[TOOL], tool_context=[{}]), ["tool_context", 0, "type"]),
    ("thinking both forms", b(thinking={"enabled": True, "type": "enabled"}), ["thinking"]),
    ("thinking neither form", b(thinking={}), ["thinking"]),
    ("thinking effort unknown", b(thinking={"enabled": True, "effort": "huge"}), ["thinking", "effort"]),
    (
        "thinking budget too small",
        b(thinking={"type": "enabled", "budget_tokens": 10}),
        ["thinking", "budget_tokens"],
    ),
    (
        "thinking budget not below max_tokens",
        b(max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 2000}),
        ["thinking", "budget_tokens"],
    ),
    (
        "thinking on a model without it",
        b(thinking={"type": "enabled", "budget_tokens": 1024}, max_tokens=2048),
        ["thinking"],
    ),
    (
        "output_config format type",
        b(output_config={"format": {"type": "xml"}}),
        ["output_config", "format", "type"],
    ),
    (
        "output_config schema missing",
        b(output_config={"format": {"type": "json_schema"}}),
        ["output_config", "format", "schema"],
    ),
    ("output_config effort unknown", b(output_config={"effort": "extreme"}), ["output_config", "effort"]),
    (
        "structured output with tools",
        b(tools=[TOOL], output_config={"format": {"type": "json_schema", "schema": SCHEMA}}),
        ["output_config", "format"],
    ),
    ("response_format type", b(response_format={"type": "xml"}), ["response_format", "type"]),
    (
        "response_format json without schema",
        b(response_format={"type": "json_schema"}),
        ["response_format", "json_schema"],
    ),
    (
        "response_format and output_config both",
        b(
            response_format={"type": "json_schema", "json_schema": {"schema": SCHEMA}},
            output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
        ),
        ["response_format"],
    ),
    ("mcp server url missing", b(mcp_servers=[{"name": "x"}]), ["mcp_servers", 0, "url"]),
    ("mcp server url invalid", b(mcp_servers=[{"url": "not a url"}]), ["mcp_servers", 0, "url"]),
    (
        "mcp servers on a model without them",
        b(mcp_servers=[{"url": "https://mcp.example.com/sse"}]),
        ["mcp_servers"],
    ),
    (
        "image on a text-only model",
        msgs(user([{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}])),
        ["messages", 0, "content", 0],
    ),
    (
        "schema the grammar cannot express",
        b(output_config={"format": {"type": "json_schema", "schema": {"$ref": "#/defs/missing"}}}),
        ["output_config", "format", "schema", "$ref"],
    ),
    (
        "tool schema the grammar cannot express",
        b(tools=[{"name": "t", "input_schema": {"$ref": "#/nowhere"}}]),
        ["tools", 0, "input_schema", "$ref"],
    ),
    ("container on a model without it", b(container="c1"), ["container"]),
    ("context_management on a model without it", b(context_management={"edits": []}), ["context_management"]),
]


@pytest.fixture(scope="module")
def client():
    app = create_app(Settings(redis_url="redis://127.0.0.1:9/0"))
    return app.test_client()


def test_at_least_sixty_cases():
    """The table covers at least sixty distinct bad bodies."""
    assert len({name for name, _, _ in CASES}) == len(CASES) >= 60


@pytest.mark.parametrize(("payload", "loc"), [(p, loc) for _, p, loc in CASES], ids=[n for n, _, _ in CASES])
def test_bad_body_is_refused_with_its_path(client, payload, loc):
    """A bad body answers 400 invalid_request_error with a detail entry at the field's exact path."""
    response = client.post("/v1/messages/async", json=payload)
    assert response.status_code == 400, response.json
    data = response.json
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert data["error"]["message"]
    assert loc in [d["loc"] for d in data["detail"]], data["detail"]
    assert all(set(d) == {"loc", "msg", "type"} for d in data["detail"])


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("{not json", "application/json"),
        ("[1, 2]", "application/json"),
        ('{"messages": []}', "text/plain"),
        ("", "application/json"),
    ],
    ids=["malformed", "array", "wrong-content-type", "empty"],
)
def test_unparseable_body_is_400(client, data, content_type):
    """Malformed JSON, a JSON array, a wrong content type or no body: 400 in the envelope."""
    response = client.post("/v1/messages/async", data=data, content_type=content_type)
    assert response.status_code == 400
    assert response.json["type"] == "error" and response.json["error"]["type"] == "invalid_request_error"


def test_body_over_the_limit_is_413():
    """A body over SLUICE_MAX_BODY_BYTES answers 413 request_too_large in the envelope."""
    app = create_app(Settings(redis_url="redis://127.0.0.1:9/0", max_body_bytes=1000))
    response = app.test_client().post("/v1/messages/async", json=b(system="x" * 2000))
    assert response.status_code == 413
    assert response.json["error"]["type"] == "request_too_large"


def test_validate_lists_errors_without_storing(client):
    """/validate answers 200 {valid: false, errors} for a bad body, and {valid: true} for a good one."""
    bad = client.post("/v1/messages/validate", json=b(temperature=3)).json
    assert bad == {
        "valid": False,
        "errors": [{"loc": ["temperature"], "msg": bad["errors"][0]["msg"], "type": "value_error"}],
    }
    assert client.post("/v1/messages/validate", json=b()).json == {"valid": True, "errors": []}


def test_problems_at_nested_paths_are_all_reported(client):
    """A problem at a path and another below it are both listed (found by schemathesis as a 500)."""
    payload = msgs({"role": "system", "content": [{"type": "tool_use", "id": "a", "name": "n", "input": {}}]})
    detail = client.post("/v1/messages/async", json=payload).json["detail"]
    assert {tuple(d["loc"]) for d in detail} == {("messages",), ("messages", 0, "content", 0)}
