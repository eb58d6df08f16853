"""Structured output through the API: both response_format shapes, and schema caps as 400s at the keyword."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from api.app import create_app
from shared.capabilities import load_request
from shared.grammar import SchemaLimits
from shared.models import load_registry
from shared.settings import Settings
from workers.providers.base import ProviderError
from workers.providers.llama_calls import GrammarCache

USER = [{"role": "user", "content": "hi"}]
PERSON = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 18, "maximum": 21}}}
REGISTRY = load_registry(Settings())


def b(**fields: Any) -> dict[str, Any]:
    """A valid body with ``fields`` overriding it."""
    return {"model": "default", "max_tokens": 16, "messages": USER, **fields}


@pytest.fixture(scope="module")
def client():
    app = create_app(Settings(redis_url="redis://127.0.0.1:9/0", schema_max_properties=8))
    return app.test_client()


@pytest.mark.parametrize(
    "json_schema",
    [
        PERSON,  # PrivateGPT's shape: the schema itself
        {"name": "person", "schema": PERSON, "strict": True},  # OpenAI's wrapper
        {"schema": PERSON},
        {"description": "a person", "schema": PERSON},
    ],
    ids=["schema-itself", "wrapper", "wrapper-schema-only", "wrapper-description"],
)
def test_response_format_json_schema_both_shapes(json_schema):
    """Either shape of response_format.json_schema becomes output_config.format with that schema."""
    body, _ = load_request(b(response_format={"type": "json_schema", "json_schema": json_schema}), REGISTRY)
    assert body["output_config"]["format"] == {"type": "json_schema", "schema": PERSON}
    assert "response_format" not in body


def test_a_schema_with_a_schema_property_is_the_schema():
    """An object whose keys are not only the wrapper's is the JSON Schema, even with a `schema` key."""
    schema = {"type": "object", "schema": {"type": "string"}, "properties": {"schema": {"type": "string"}}}
    body, _ = load_request(b(response_format={"type": "json_schema", "json_schema": schema}), REGISTRY)
    assert body["output_config"]["format"]["schema"] == schema


@pytest.mark.parametrize(
    ("json_schema", "loc"),
    [
        ({"type": 5}, ["response_format", "json_schema"]),
        ({"name": "p", "schema": {"type": 5}}, ["response_format", "json_schema", "schema"]),
        ({"type": "number", "maximum": 3}, ["response_format", "json_schema", "maximum"]),
        (
            {"schema": {"type": "number", "maximum": 3}},
            ["response_format", "json_schema", "schema", "maximum"],
        ),
    ],
)
def test_response_format_problems_point_where_the_client_put_them(client, json_schema, loc):
    """Errors in either shape carry the loc of the client's own body, keyword included."""
    response = client.post(
        "/v1/messages/async", json=b(response_format={"type": "json_schema", "json_schema": json_schema})
    )
    assert response.status_code == 400, response.json
    assert loc in [d["loc"] for d in response.json["detail"]], response.json["detail"]


HUGE = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 50_000_000}}}
HUGE_LOC = ["output_config", "format", "schema", "properties", "a", "maxLength"]


def test_huge_max_length_is_a_400_at_the_keyword_on_async(client):
    """maxLength 50,000,000 is refused on /async with invalid_request_error and loc at maxLength."""
    started = time.perf_counter()
    response = client.post(
        "/v1/messages/async", json=b(output_config={"format": {"type": "json_schema", "schema": HUGE}})
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 400 and response.json["error"]["type"] == "invalid_request_error"
    assert [d["loc"] for d in response.json["detail"]] == [HUGE_LOC]
    assert "maxLength" in response.json["detail"][0]["msg"]
    assert elapsed < 1  # generous: measured at a few ms; the old converter took seconds


def test_huge_max_length_on_validate(client):
    """/validate answers valid:false with the same error at maxLength."""
    response = client.post(
        "/v1/messages/validate", json=b(output_config={"format": {"type": "json_schema", "schema": HUGE}})
    )
    assert response.status_code == 200 and response.json["valid"] is False
    assert [e["loc"] for e in response.json["errors"]] == [HUGE_LOC]


def test_structure_caps_apply_to_tool_schemas_from_settings(client):
    """SLUICE_SCHEMA_MAX_PROPERTIES (8 here) refuses a tool schema of 9 properties at its properties."""
    schema = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(9)}}
    response = client.post("/v1/messages/async", json=b(tools=[{"name": "t", "input_schema": schema}]))
    assert response.status_code == 400
    assert ["tools", 0, "input_schema", "properties"] in [d["loc"] for d in response.json["detail"]]


def test_integer_bounds_are_accepted_on_the_embedded_model(client):
    """minimum/maximum on an integer no longer make a 400 on the grammar-constrained model."""
    response = client.post(
        "/v1/messages/validate", json=b(output_config={"format": {"type": "json_schema", "schema": PERSON}})
    )
    assert response.json == {"valid": True, "errors": []}


def test_grammar_cache_hits_by_hash_and_evicts_the_least_recent():
    """The same schema (any key order) is compiled once; past the bound the oldest goes."""
    cache = GrammarCache(SchemaLimits(), entries=2)
    first = cache.grammar({"type": "integer", "minimum": 1})
    assert cache.grammar({"minimum": 1, "type": "integer"}) is first
    cache.grammar({"type": "string"})
    cache.grammar({"type": "boolean"})
    assert len(cache) == 2
    assert cache.grammar({"type": "integer", "minimum": 1}) is not first


def test_grammar_compilation_has_a_time_budget(monkeypatch):
    """A compilation over SLUICE_GRAMMAR_COMPILE_SECONDS fails the generation, not holding the worker."""
    release = threading.Event()

    def slow(schema: Any, limits: SchemaLimits, vocab: Any = None) -> str:
        release.wait(10)
        return "never used"

    monkeypatch.setattr("workers.providers.llama_calls.compile_grammar", slow)
    cache = GrammarCache(SchemaLimits(compile_seconds=0.05))
    try:
        with pytest.raises(ProviderError, match="SLUICE_GRAMMAR_COMPILE_SECONDS"):
            cache.grammar({"type": "string"})
    finally:
        release.set()
    assert len(cache) == 0


def test_node_cap_holds_for_all_schemas_of_a_request(client):
    """Sub-schemas are counted over the whole request: two tools of 600 each pass alone, not together."""
    schema = {"anyOf": [{"type": "null"}] * 599}
    alone = client.post("/v1/messages/validate", json=b(tools=[{"name": "a", "input_schema": schema}]))
    assert alone.json["valid"] is True, alone.json
    both = [{"name": "a", "input_schema": schema}, {"name": "b", "input_schema": schema}]
    response = client.post("/v1/messages/async", json=b(tools=both))
    assert response.status_code == 400
    detail = response.json["detail"]
    assert [d["loc"][:3] for d in detail] == [["tools", 1, "input_schema"]], detail
    assert "SLUICE_SCHEMA_MAX_NODES" in detail[0]["msg"]


def test_meta_validation_matches_check_schema():
    """The flat meta-schema refuses and accepts exactly what jsonschema's check_schema does."""
    from jsonschema import Draft202012Validator, SchemaError

    from shared.schemas.metaschema import check_json_schema

    cases = [
        {"type": 5}, {"properties": 5}, {"properties": {"a": {"type": "strin"}}}, {"pattern": "(("},
        {"minLength": -1}, {"items": [{}]}, {"$defs": {"a": {"enum": 5}}}, {"required": [1]}, {"anyOf": []},
        {"dependentRequired": {"a": [1]}}, {"unevaluatedProperties": 5}, {"contentSchema": 5}, {"$id": 5},
        {"type": "object", "properties": {"a": {"type": "integer", "minimum": 1}}}, True, {"$ref": "#/x"},
        {"prefixItems": [{"type": "string"}], "items": False}, {"if": {"const": 1}, "then": {"maxLength": 2}},
    ]  # fmt: skip
    for schema in cases:
        outcomes = []
        for check in (Draft202012Validator.check_schema, check_json_schema):
            try:
                check(schema)
                outcomes.append(None)
            except SchemaError as exc:
                outcomes.append(exc.message)
        assert outcomes[0] == outcomes[1], schema
