"""Back-pressure: per-key rate and concurrency limits (429), queue depth (529), body size (413)."""

from __future__ import annotations

import httpx
import pytest

from tests.reliability.helpers import chat, post, queued_tasks, stored_messages

pytestmark = pytest.mark.integration


def test_rate_limit_answers_429_with_retry_after(make_stack):
    """Past its per-minute budget a key gets 429 rate_limit_error with Retry-After; others do not."""
    stack = make_stack(SLUICE_API_KEYS="k1,k2", SLUICE_RATE_LIMIT_PER_MINUTE="3")
    api = stack.start_api()
    codes = [post(api, chat(), {"x-api-key": "k1"}).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    refused = post(api, chat(), {"x-api-key": "k1"})
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["Retry-After"]) <= 20
    assert post(api, chat(), {"x-api-key": "k2"}).status_code == 200
    assert stored_messages(stack.redis) == 4


def test_concurrency_limit_counts_pending_and_running_messages(make_stack):
    """A key with max 2 messages in flight gets 429 for the third, and room again after a cancel."""
    stack = make_stack(SLUICE_MAX_CONCURRENT_PER_KEY="2")
    api = stack.start_api()
    first = post(api, chat()).json()["message_id"]
    assert post(api, chat()).status_code == 200
    third = post(api, chat())
    assert third.status_code == 429 and "Retry-After" in third.headers
    httpx.post(f"{api}/v1/messages/async/{first}/cancel", timeout=10)
    assert post(api, chat()).status_code == 200


def test_queue_depth_limit_answers_529_and_stores_nothing(make_stack):
    """With the queue at its depth limit, a submit gets 529 overloaded_error and nothing is stored."""
    stack = make_stack(SLUICE_MAX_QUEUE_DEPTH="3")
    api = stack.start_api()
    for _ in range(3):
        assert post(api, chat()).status_code == 200
    refused = post(api, chat(), message_id="would-be")
    assert refused.status_code == 529
    assert refused.json()["error"]["type"] == "overloaded_error"
    assert int(refused.headers["Retry-After"]) >= 1
    assert stored_messages(stack.redis) == 3 and queued_tasks(stack.redis) == 3
    assert httpx.get(f"{api}/v1/messages/async/would-be/status", timeout=10).status_code == 404


def test_body_over_the_limit_is_413(make_stack):
    """A body above SLUICE_MAX_BODY_BYTES is refused with 413 and stores nothing."""
    stack = make_stack(SLUICE_MAX_BODY_BYTES="2000")
    api = stack.start_api()
    response = post(api, chat(text="x" * 5000))
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
    assert stored_messages(stack.redis) == 0
