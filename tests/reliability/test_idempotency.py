"""Idempotency-Key and custom ids under concurrent duplicate submits: one message, one task."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.reliability.helpers import chat, post, queued_tasks, stored_messages

pytestmark = pytest.mark.integration

THREADS = 16


def _api(make_stack, **env):
    stack = make_stack(**env)
    return stack, stack.start_api()


def _fire(api, payload, headers=None, **params):
    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(post, api, payload, headers, **params) for _ in range(THREADS)]
        return [future.result() for future in futures]


def test_concurrent_same_key_and_body_create_one_message_and_one_task(make_stack):
    """Sixteen simultaneous submits with one Idempotency-Key all get the first message's id."""
    stack, api = _api(make_stack)
    responses = _fire(api, chat(), {"Idempotency-Key": "order-42"})
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["message_id"] for r in responses}) == 1
    assert stored_messages(stack.redis) == 1
    assert queued_tasks(stack.redis) == 1


def test_same_key_with_another_body_is_a_conflict(make_stack):
    """Reusing an Idempotency-Key with a different body is a 409 and stores nothing."""
    stack, api = _api(make_stack)
    first = post(api, chat(max_tokens=5), {"Idempotency-Key": "k1"})
    assert first.status_code == 200
    again = post(api, chat(max_tokens=5), {"Idempotency-Key": "k1"})
    assert again.json()["message_id"] == first.json()["message_id"]
    other = post(api, chat(max_tokens=6), {"Idempotency-Key": "k1"})
    assert other.status_code == 409
    assert other.json()["error"]["type"] == "conflict_error"
    assert stored_messages(stack.redis) == 1 and queued_tasks(stack.redis) == 1


def test_a_repeat_reports_the_first_message_as_it_is_now(make_stack):
    """A repeated Idempotency-Key answers with the first message's current status, not 'pending'."""
    _, api = _api(make_stack)
    first = post(api, chat(max_tokens=5), {"Idempotency-Key": "k2"})
    message_id = first.json()["message_id"]
    assert first.json()["status"] == "pending"
    cancel = httpx.post(f"{api}/v1/messages/async/{message_id}/cancel", timeout=10)
    assert cancel.json()["status"] == "cancelled"
    again = post(api, chat(max_tokens=5), {"Idempotency-Key": "k2"})
    assert again.json() == {**first.json(), "status": "cancelled"}


def test_concurrent_same_custom_id_creates_exactly_one(make_stack):
    """Sixteen simultaneous submits with one custom message_id: one 200, the rest 400."""
    stack, api = _api(make_stack)
    responses = _fire(api, chat(), message_id="mine-1")
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [400] * (THREADS - 1)
    assert all("already exists" in r.json()["error"]["message"] for r in responses if r.status_code == 400)
    assert stored_messages(stack.redis) == 1 and queued_tasks(stack.redis) == 1


def test_idempotency_keys_are_per_api_key(make_stack):
    """Two tenants using the same Idempotency-Key get two different messages."""
    _stack, api = _api(make_stack, SLUICE_API_KEYS="alpha-key,beta-key")
    one = post(api, chat(), {"x-api-key": "alpha-key", "Idempotency-Key": "same"})
    two = post(api, chat(), {"x-api-key": "beta-key", "Idempotency-Key": "same"})
    assert one.status_code == two.status_code == 200
    assert one.json()["message_id"] != two.json()["message_id"]
