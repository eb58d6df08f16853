"""Cancel, delete, pings and the synchronous endpoint, on the real stack."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from tests.integration.helpers import (
    body,
    check_grammar,
    observe,
    status,
    submit,
    text_of,
    wait_status,
)
from tests.sse import parse_lines

pytestmark = pytest.mark.integration

LONG = body("Write a very long essay about the history of the ocean.", max_tokens=3000, seed=1)


def cancel(api: str, message_id: str, **kwargs) -> httpx.Response:
    return httpx.post(f"{api}/v1/messages/async/{message_id}/cancel", timeout=10, **kwargs)


def test_cancel_mid_generation_ends_cancelled(live):
    """Cancelling a running message closes the block, stops with 'cancelled' and frees the worker."""
    message_id = submit(live.api, LONG)
    seen: list = []

    def on_frame(frame):
        seen.append(frame)
        if len(seen) == 6:
            response = cancel(live.api, message_id)
            assert response.status_code == 200
            assert response.json()["message"] == "Stream cancelled successfully"
            assert response.json()["status"] == "cancelled"

    frames = observe(live.api, message_id, on_frame=on_frame)
    check_grammar(frames)
    assert [f.event for f in frames[-3:]] == ["content_block_stop", "message_delta", "message_stop"]
    assert frames[-2].data["delta"]["stop_reason"] == "cancelled"
    assert frames[-2].data["usage"]["output_tokens"] < 500
    final = status(live.api, message_id)
    assert final["status"] == "cancelled" and final["completed_at"]
    again = cancel(live.api, message_id)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    # The worker is free at once: a short message completes promptly afterwards.
    quick = submit(live.api, body(max_tokens=4, seed=1))
    assert wait_status(live.api, quick, {"completed"}, timeout=30)["status"] == "completed"


def test_cancel_while_pending_never_runs(live):
    """A message cancelled in the queue never starts, and its stream still ends well-formed."""
    blocker = submit(live.api, LONG)
    wait_status(live.api, blocker, {"processing"})
    queued = submit(live.api, body(max_tokens=8, seed=1))
    assert status(live.api, queued)["status"] == "pending"
    response = cancel(live.api, queued, json={})
    assert response.json()["status"] == "cancelled"
    cancel(live.api, blocker)
    wait_status(live.api, blocker, {"cancelled"})
    follow_up = submit(live.api, body(max_tokens=4, seed=1))
    wait_status(live.api, follow_up, {"completed"}, timeout=30)
    final = status(live.api, queued)
    assert final["status"] == "cancelled"
    assert "worker" not in final["metadata"] and "started_at" not in final["metadata"]
    frames = observe(live.api, queued)
    assert [f.event for f in frames] == ["message_start", "message_delta", "message_stop"]
    assert frames[1].data["delta"]["stop_reason"] == "cancelled"


def test_cancel_body_must_be_empty_object(live):
    """A cancel body other than {} is a 400."""
    message_id = submit(live.api, body(max_tokens=2, seed=1))
    response = cancel(live.api, message_id, json={"now": True})
    assert response.status_code == 400


def test_delete_then_404(live):
    """After delete, status and stream are 404; delete answers 200 with deleted true."""
    message_id = submit(live.api, body(max_tokens=8, seed=1))
    observe(live.api, message_id)
    response = httpx.delete(f"{live.api}/v1/messages/async/{message_id}/delete", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"message_id": message_id, "deleted": True}
    assert httpx.get(f"{live.api}/v1/messages/async/{message_id}/status").status_code == 404
    assert httpx.get(f"{live.api}/v1/messages/async/{message_id}/stream").status_code == 404
    other = submit(live.api, body(max_tokens=4, seed=1))
    assert httpx.delete(f"{live.api}/v1/messages/async/{other}", timeout=10).status_code == 200


def test_delete_while_running_stops_the_generation(live):
    """Deleting a running message ends its observers and frees the worker."""
    message_id = submit(live.api, LONG)
    wait_status(live.api, message_id, {"processing"})
    assert httpx.delete(f"{live.api}/v1/messages/async/{message_id}", timeout=10).status_code == 200
    quick = submit(live.api, body(max_tokens=4, seed=1))
    assert wait_status(live.api, quick, {"completed"}, timeout=30)["status"] == "completed"
    assert httpx.get(f"{live.api}/v1/messages/async/{message_id}/status").status_code == 404


def test_pings_while_waiting_in_the_queue(live):
    """An observer of a queued message receives ping events (no id) while nothing happens."""
    blocker = submit(live.api, LONG)
    wait_status(live.api, blocker, {"processing"})
    queued = submit(live.api, body(max_tokens=2, seed=1))
    pings = 0
    with httpx.stream("GET", f"{live.api}/v1/messages/async/{queued}/stream", timeout=30) as resp:
        for frame in parse_lines(resp.iter_lines()):
            if frame.event == "ping":
                assert frame.id is None
                pings += 1
                if pings == 2:
                    break
    cancel(live.api, queued)
    cancel(live.api, blocker)
    assert pings == 2


def test_sync_message_equals_streamed_deltas(live):
    """stream:false content equals the concatenated deltas of stream:true for the same seed."""
    payload = body("Name three colours.", max_tokens=24, seed=42)
    response = httpx.post(f"{live.api}/v1/messages", json=payload, timeout=60)
    assert response.status_code == 200, response.text
    message = response.json()
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["stop_reason"] in {"end_turn", "max_tokens"}
    with httpx.stream(
        "POST", f"{live.api}/v1/messages", json={**payload, "stream": True}, timeout=60
    ) as streamed:
        frames = [f for f in parse_lines(streamed.iter_lines()) if f.event != "ping"]
    check_grammar(frames)
    assert message["content"][0]["text"] == text_of(frames)
    assert message["usage"]["output_tokens"] == frames[-2].data["usage"]["output_tokens"]


def test_sync_stream_disconnect_cancels_generation(live):
    """Closing a stream:true connection early cancels its generation."""
    with httpx.stream(
        "POST", f"{live.api}/v1/messages", json={**LONG, "stream": True}, timeout=60
    ) as streamed:
        frames = []
        for frame in parse_lines(streamed.iter_lines()):
            frames.append(frame)
            if len(frames) == 5:
                break
    message_id = frames[0].data["message"]["id"]
    final = wait_status(live.api, message_id, {"cancelled", "completed", "error"}, timeout=30)
    assert final["status"] == "cancelled"


def test_anthropic_sdk_works_unchanged(live):
    """The official anthropic SDK's create and stream work against /v1/messages."""
    client = anthropic.Anthropic(base_url=live.api, api_key="unused", max_retries=0)
    message = client.messages.create(
        model="default",
        max_tokens=16,
        messages=[{"role": "user", "content": "Say hello."}],
        extra_body={"seed": 5},
    )
    assert message.role == "assistant" and message.content[0].type == "text"
    assert message.usage.output_tokens > 0
    with client.messages.stream(
        model="default",
        max_tokens=16,
        messages=[{"role": "user", "content": "Say hello."}],
        extra_body={"seed": 5},
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == message.content[0].text
    assert final.stop_reason == message.stop_reason


def test_invalid_body_is_400_with_paths_and_stores_nothing(live):
    """A bad body gets the envelope with loc paths, and no message is created."""
    before = set(live.redis.scan_iter("sluice:msg:*"))
    bad = {"messages": [{"role": "user", "content": ""}], "max_tokens": 0, "typo": 1}
    response = httpx.post(f"{live.api}/v1/messages/async", json=bad, timeout=10)
    assert response.status_code == 400
    envelope = response.json()
    assert envelope["type"] == "error"
    assert envelope["error"]["type"] == "invalid_request_error"
    locs = {tuple(d["loc"]) for d in envelope["detail"]}
    assert {("messages", 0, "content"), ("max_tokens",), ("typo",)} <= locs
    for raw, ctype in (
        (b"{not json", "application/json"),
        (b"[]", "application/json"),
        (json.dumps(body()).encode(), "text/plain"),
    ):
        response = httpx.post(
            f"{live.api}/v1/messages/async", content=raw, headers={"content-type": ctype}, timeout=10
        )
        assert response.status_code == 400, raw
    unknown = httpx.post(f"{live.api}/v1/messages/async", json=body(model="gpt-9"), timeout=10)
    assert unknown.status_code == 400 and unknown.json()["detail"][0]["loc"] == ["model"]
    assert set(live.redis.scan_iter("sluice:msg:*")) == before
