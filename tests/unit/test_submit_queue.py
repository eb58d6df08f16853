"""What ``POST /v1/messages/async`` leaves in Redis: the message and exactly one task, or nothing."""

from __future__ import annotations

import base64
import json

import pytest
import redis

from api.app import create_app
from shared.keys import broker_list
from shared.settings import Settings

QUEUE = "sluice.test-submit"
MODELS = f"""
[models.scripted]
provider = "scripted"
queue = "{QUEUE}"
"""
BODY = {"model": "scripted", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def api(redis_url, tmp_path):
    """An app on the suite's redis-server (emptied), serving one scripted model on ``QUEUE``."""
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    app = create_app(Settings(redis_url=redis_url, models_file=str(models), rate_limit_per_minute=2))
    yield app.test_client(), client
    client.flushdb()
    client.close()


def _tasks(client: redis.Redis, band: int) -> list[dict]:
    messages = [json.loads(raw) for raw in client.lrange(broker_list(QUEUE, band), 0, -1)]
    for message in messages:
        message["body"] = json.loads(base64.b64decode(message["body"]))
    return messages


def test_submit_queues_one_task_in_its_band_with_the_correlation_header(api):
    """Priority -5 lands in band 0 of the model's queue; the task carries the id and correlation id."""
    http, client = api
    response = http.post("/v1/messages/async", json={**BODY, "priority": -5, "correlation_id": "corr-1"})
    assert response.status_code == 200, response.json
    assert response.mimetype == "application/json"
    message_id = response.json["message_id"]
    assert response.json == {
        "message_id": message_id,
        "status": "pending",
        "message": "Request initiated successfully",
    }
    (task,) = _tasks(client, 0)
    assert task["body"][0] == [message_id]
    assert task["headers"]["task"] == "sluice.generate"
    assert task["headers"]["sluice_correlation_id"] == "corr-1"
    assert task["properties"]["priority"] == 0
    assert client.hget(f"sluice:msg:{{{message_id}}}:status", "status") == "pending"


def test_rate_limited_submit_is_429_and_queues_nothing(api):
    """Past the per-minute rate: 429 with Retry-After, and no third task or message."""
    http, client = api
    for _ in range(2):
        assert http.post("/v1/messages/async", json=BODY).status_code == 200
    refused = http.post("/v1/messages/async", json=BODY)
    assert refused.status_code == 429
    assert refused.json["error"]["type"] == "rate_limit_error"
    assert int(refused.headers["Retry-After"]) >= 1
    assert len(_tasks(client, 5)) == 2
    assert len(client.keys("sluice:msg:*:status")) == 2


def test_submit_without_redis_is_503_and_says_so():
    """Redis (the broker too) unreachable: 503 in the error envelope, not a 500."""
    app = create_app(Settings(redis_url="redis://127.0.0.1:9/0"))
    response = app.test_client().post("/v1/messages/async", json={**BODY, "model": "default"})
    assert response.status_code == 503
    assert response.json["type"] == "error"
    assert "queue is unavailable" in response.json["error"]["message"]
