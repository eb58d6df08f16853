"""A hostile tenant can neither see, squat nor reach another tenant's messages (real stack)."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.helpers import check_grammar
from tests.reliability.helpers import Watcher, chat, post, status_of
from tests.security.conftest import KEY_A, KEY_B, auth

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_same_custom_id_in_two_tenants_is_two_messages(make_stack):
    """Key B creating order-42 after key A succeeds: two messages, each seen only by its owner,
    each stream only its own events; B learns nothing of A's id."""
    stack = make_stack()
    stack.worker("w1")
    api = stack.start_api()
    first = post(api, chat(model="fast", max_tokens=8), auth(KEY_A), message_id="order-42")
    assert first.status_code == 200, first.text
    second = post(api, chat(model="default", max_tokens=6), auth(KEY_B), message_id="order-42")
    assert second.status_code == 200, second.text
    assert first.json()["message_id"] == second.json()["message_id"] == "order-42"
    frames_a = Watcher([api], "order-42", auth(KEY_A)).wait(60)
    frames_b = Watcher([api], "order-42", auth(KEY_B)).wait(60)
    check_grammar(frames_a)
    check_grammar(frames_b)
    text_a = "".join(f.raw_data for f in frames_a)
    text_b = "".join(f.raw_data for f in frames_b)
    assert "alpha" in text_a and "one" not in text_a
    assert "one" in text_b and "alpha" not in text_b
    # The tenant never shows in an event: message_start names the public id.
    assert frames_a[0].data["message"]["id"] == frames_b[0].data["message"]["id"] == "order-42"
    assert status_of(api, "order-42", auth(KEY_A))["metadata"]["model"] == "fast"
    assert status_of(api, "order-42", auth(KEY_B))["metadata"]["model"] == "default"
    # A repeat in one tenant is still refused; the other tenant's copy is untouched by a delete.
    again = post(api, chat(model="fast"), auth(KEY_A), message_id="order-42")
    assert again.status_code == 400 and "already exists" in again.json()["error"]["message"]
    assert (
        httpx.delete(f"{api}/v1/messages/async/order-42", headers=auth(KEY_A), timeout=10).status_code == 200
    )
    assert status_of(api, "order-42", auth(KEY_B))["status"] == "completed"


def test_another_tenants_message_is_a_404_everywhere(make_stack):
    """Status, stream, cancel and delete of another key's message answer 404, as for no message."""
    stack = make_stack()
    api = stack.start_api()
    message_id = post(api, chat(), auth(KEY_A)).json()["message_id"]
    base = f"{api}/v1/messages/async/{message_id}"
    for method, path in (("GET", "/status"), ("GET", "/stream"), ("POST", "/cancel"), ("DELETE", "")):
        answer = httpx.request(method, base + path, headers=auth(KEY_B), timeout=10)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["error"]["type"] == "not_found_error"
    assert status_of(api, message_id, auth(KEY_A))["status"] == "pending"


def test_idempotency_keys_live_in_their_tenant(make_stack):
    """The same Idempotency-Key from two keys creates two messages; neither answers with the other's."""
    stack = make_stack()
    api = stack.start_api()
    headers_a = {**auth(KEY_A), "Idempotency-Key": "same"}
    headers_b = {**auth(KEY_B), "Idempotency-Key": "same"}
    first = post(api, chat(), headers_a).json()["message_id"]
    other = post(api, chat(), headers_b).json()["message_id"]
    assert first != other
    assert post(api, chat(), headers_a).json()["message_id"] == first
    different = post(api, chat(text="other"), headers_b)
    assert different.status_code == 409
