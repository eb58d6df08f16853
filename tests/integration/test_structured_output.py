"""Structured output on the embedded model, through the real stack: bounds and both schema shapes hold."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest

from tests.integration.helpers import body

pytestmark = pytest.mark.integration

AGE = {
    "type": "object",
    "properties": {"age": {"type": "integer", "minimum": 18, "maximum": 21}},
    "required": ["age"],
    "additionalProperties": False,
}
ITEM = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "count": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 5},
        "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{2}$"},
    },
    "required": ["name", "count", "code"],
    "additionalProperties": False,
}


def chat(api: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/messages (stream:false) and return the Message."""
    response = httpx.post(f"{api}/v1/messages", json=payload, timeout=600)  # a shared, loaded CPU
    assert response.status_code == 200, response.text
    message: dict[str, Any] = response.json()
    return message


def output(message: dict[str, Any]) -> Any:
    """The Message's text, parsed as JSON."""
    return json.loads("".join(b["text"] for b in message["content"] if b["type"] == "text"))


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_integer_bounds_hold_on_every_seed(live, seed):
    """{"age": integer 18..21} always yields an age from 18 to 21, whatever the seed."""
    fmt = {"format": {"type": "json_schema", "schema": AGE}}
    payload = body(
        "How old is Sam? Answer in JSON.", max_tokens=20, seed=seed, temperature=1, output_config=fmt
    )
    value = output(chat(live.api, payload))
    assert 18 <= value["age"] <= 21, value


@pytest.mark.parametrize(
    "json_schema",
    [ITEM, {"name": "item", "schema": ITEM, "strict": True}],
    ids=["schema-itself", "openai-wrapper"],
)
def test_response_format_in_either_shape_constrains_a_real_generation(live, json_schema):
    """response_format.json_schema as the schema itself or as OpenAI's wrapper: the output obeys it."""
    assert httpx.post(
        f"{live.api}/v1/messages/validate",
        json=body(max_tokens=60, response_format={"type": "json_schema", "json_schema": json_schema}),
        timeout=30,
    ).json() == {"valid": True, "errors": []}
    payload = body(
        "Describe one item in JSON.",
        max_tokens=60,
        seed=7,
        response_format={"type": "json_schema", "json_schema": json_schema},
    )
    value = output(chat(live.api, payload))
    jsonschema.validate(value, ITEM)
