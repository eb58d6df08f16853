"""The OpenAPI document: every route is in it, and its SSE event schemas fit the events we really emit."""

from __future__ import annotations

import re

import jsonschema
import pytest

from api.openapi import SSE_EVENTS, build_openapi
from api.routes import ROUTES
from shared import events as ev

DOCUMENT = build_openapi()


def test_every_route_is_documented():
    """Each route of the table appears with each of its methods."""
    for route in ROUTES:
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", route.rule)  # <path:x> → {x}
        for method in route.methods:
            assert method.lower() in DOCUMENT["paths"][path], (path, method)


EVENTS = [
    ev.message_start("msg_1", "m", 3),
    ev.content_block_start(0, ev.text_block()),
    ev.text_delta(0, "hi"),
    ev.input_json_delta(1, '{"a"'),
    ev.content_block_stop(0),
    ev.message_delta("end_turn", None, 2),
    ev.message_stop(),
    ev.error("api_error", "boom"),
]


@pytest.mark.parametrize("event", EVENTS, ids=[f"{e['type']}-{i}" for i, e in enumerate(EVENTS)])
def test_sse_event_schema_fits_the_event(event):
    """The documented schema of an event type validates an event built by shared/events.py."""
    assert event["type"] in SSE_EVENTS
    schema = {"$ref": f"#/components/schemas/SSE_{event['type']}", "components": DOCUMENT["components"]}
    jsonschema.validate(event, schema)
