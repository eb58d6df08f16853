"""Bodies are bounded before any work: chunked ones by size (413), every one by nesting depth (400).

The app runs in-process with Redis on a port nothing listens on: a body that got as far as
being stored would fail differently, so each refusal also proves nothing was stored.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask import Response
from werkzeug.test import EnvironBuilder, run_wsgi_app

from api.app import create_app
from api.body import depth_exceeded
from shared.settings import Settings

NOWHERE = "redis://127.0.0.1:9/0"
BODY_ENDPOINTS = (
    "/v1/messages",
    "/v1/messages/async",
    "/v1/messages/validate",
    "/v1/messages/count_tokens",
    "/v1/messages/async/m1/cancel",
)


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "default", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], **fields}


def nested(depth: int) -> Any:
    """A JSON value nesting ``depth`` levels of lists and objects."""
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


class CountingStream(io.RawIOBase):
    """A request body of ``size`` bytes that counts how much of it the server read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.size - self.read_bytes)
        buffer[:n] = b" " * n
        self.read_bytes += n
        return n


def chunked_post(app: Any, path: str, stream: Any) -> Any:
    """POST ``stream`` as a body without Content-Length, as a chunked upload reaches the app from
    gunicorn (which undoes the chunking and marks the input terminated)."""
    environ = EnvironBuilder(
        path=path, method="POST", content_type="application/json", headers={"Transfer-Encoding": "chunked"}
    ).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": stream, "wsgi.input_terminated": True})
    body_iter, status, headers = run_wsgi_app(app, environ, buffered=True)
    return Response(b"".join(body_iter), status=status, headers=headers)


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
def test_json_nested_a_hundred_thousand_levels_is_a_400_on_every_body_endpoint(path):
    """No RecursionError, no 500: an invalid_request_error that names the nesting limit."""
    app = create_app(Settings(redis_url=NOWHERE, max_body_bytes=1_000_000))
    deep = "[" * 100_000 + "]" * 100_000
    response = app.test_client().post(path, data=deep, content_type="application/json")
    assert response.status_code == 400, response.data
    assert response.json["error"]["type"] == "invalid_request_error"
    assert "SLUICE_MAX_JSON_DEPTH" in response.json["error"]["message"]
    assert response.json["detail"][0]["loc"] == ["body"]


def test_the_nesting_limit_is_configurable():
    """Metadata nested 80 deep is refused under the default limit and accepted under a higher one."""
    payload = body(metadata={"deep": nested(80)})
    default = create_app(Settings(redis_url=NOWHERE)).test_client()
    assert default.post("/v1/messages/validate", json=payload).status_code == 400
    roomy = create_app(Settings(redis_url=NOWHERE, max_json_depth=200)).test_client()
    answer = roomy.post("/v1/messages/validate", json=payload)
    assert answer.status_code == 200 and answer.json["valid"] is True


def test_depth_is_counted_in_levels_of_lists_and_objects():
    """A flat object is one level; scalars add none; wide values are not deep."""
    assert not depth_exceeded({"a": 1, "b": "x"}, 1)
    assert depth_exceeded({"a": [1]}, 1)
    assert not depth_exceeded({"a": [1]}, 2)
    assert not depth_exceeded([[0]] * 10_000, 2)
    assert depth_exceeded(nested(65), 64) and not depth_exceeded(nested(64), 64)


def test_a_chunked_body_over_the_limit_is_a_413_read_only_just_past_the_limit():
    """Without Content-Length, a body over SLUICE_MAX_BODY_BYTES is request_too_large, and the
    server stops reading one byte past the limit instead of taking the whole upload."""
    app = create_app(Settings(redis_url=NOWHERE, max_body_bytes=10_000))
    stream = CountingStream(50_000_000)
    response = chunked_post(app, "/v1/messages/async", stream)
    assert response.status_code == 413, response.data
    assert response.json["error"]["type"] == "request_too_large"
    assert stream.read_bytes <= 10_001


def test_a_chunked_body_within_the_limit_is_read_whole():
    """A chunked body under the limit is parsed like any other (here: validated)."""
    app = create_app(Settings(redis_url=NOWHERE, max_body_bytes=10_000))
    raw = json.dumps(body()).encode()
    response = chunked_post(app, "/v1/messages/validate", io.BytesIO(raw))
    assert response.status_code == 200, response.data
    assert response.json == {"valid": True, "errors": []}
