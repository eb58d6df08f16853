"""Redis unreachable, or demoted to a replica mid-failover: every route answers 503 with
Retry-After in the error envelope, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from api.app import create_app
from deploy.probes import free_port
from deploy.stack import Stack
from shared.settings import Settings

BODY = {"model": "default", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def _assert_unavailable(response) -> None:
    assert response.status_code == 503, response.text
    assert response.json["type"] == "error" and response.json["error"]["type"] == "api_error"
    assert int(response.headers["Retry-After"]) >= 1


def test_reads_without_redis_are_503():
    """Status, stream and delete with nothing listening on the Redis port."""
    client = create_app(Settings(redis_url="redis://127.0.0.1:9/0")).test_client()
    _assert_unavailable(client.get("/v1/messages/async/m1/status"))
    _assert_unavailable(client.get("/v1/messages/async/m1/stream"))
    _assert_unavailable(client.delete("/v1/messages/async/m1"))


@pytest.fixture
def demoted(tmp_path: Path) -> Iterator[str]:
    """A redis-server that held a message, then became the replica of a primary that is gone
    (what an old primary is for a moment during a Sentinel failover): reads work, writes answer
    READONLY."""
    stack = Stack(tmp_path)
    url = stack.start_redis(persistent=False)
    yield url
    stack.stop()


def test_writes_on_a_demoted_primary_are_503(demoted: str):
    """Cancel and submit on a read-only replica: 503 (retry), the status still reads."""
    client = create_app(Settings(redis_url=demoted)).test_client()
    created = client.post("/v1/messages/async", json=BODY)
    assert created.status_code == 200, created.text
    message_id = created.json["message_id"]
    redis.Redis.from_url(demoted).replicaof("127.0.0.1", free_port())
    assert client.get(f"/v1/messages/async/{message_id}/status").status_code == 200
    _assert_unavailable(client.post(f"/v1/messages/async/{message_id}/cancel"))
    _assert_unavailable(client.post("/v1/messages/async", json=BODY))
