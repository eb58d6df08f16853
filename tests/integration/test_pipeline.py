"""submit → queue → real Celery worker → Redis Stream → SSE, with the embedded model."""

from __future__ import annotations

import threading

import httpx
import pytest

from shared.keys import PREFIX
from tests.integration.helpers import (
    body,
    check_grammar,
    observe,
    status,
    submit,
    text_of,
    wait_status,
)

pytestmark = pytest.mark.integration


def test_submit_stream_complete(live):
    """A message runs to completed and its stream follows the event grammar."""
    message_id = submit(live.api, body(max_tokens=24, seed=7))
    frames = observe(live.api, message_id)
    check_grammar(frames)
    assert frames[-1].event == "message_stop"
    delta = frames[-2].data
    assert delta["delta"]["stop_reason"] in {"end_turn", "max_tokens"}
    assert 0 < delta["usage"]["output_tokens"] <= 24
    assert frames[0].data["message"]["usage"]["input_tokens"] > 5
    assert text_of(frames)
    final = wait_status(live.api, message_id, {"completed"})
    meta = final["metadata"]
    assert final["completed_at"] and final["error_message"] is None
    assert meta["output_tokens"] == delta["usage"]["output_tokens"]
    assert meta["event_count"] == len(frames)
    assert meta["queue"] == "sluice.local" and meta["worker"]
    assert meta["ttft_ms"] > 0 and meta["queue_wait_ms"] >= 0


def test_late_observer_gets_identical_events(live):
    """An observer arriving after completion receives the same (id, event, data) as a live one."""
    message_id = submit(live.api, body(max_tokens=16, seed=3))
    live_frames = observe(live.api, message_id)
    late_frames = observe(live.api, message_id)
    assert [(f.id, f.event, f.raw_data) for f in late_frames] == [
        (f.id, f.event, f.raw_data) for f in live_frames
    ]


def test_resume_gives_exactly_the_suffix(live):
    """Last-Event-ID and ?after= both yield exactly the events after the cursor."""
    message_id = submit(live.api, body(max_tokens=16, seed=5))
    frames = observe(live.api, message_id)
    for cut in (0, 3, len(frames) - 2):
        cursor = frames[cut].id
        by_header = observe(live.api, message_id, headers={"Last-Event-ID": cursor})
        by_query = observe(live.api, message_id, params={"after": cursor})
        expected = [(f.id, f.raw_data) for f in frames[cut + 1 :]]
        assert [(f.id, f.raw_data) for f in by_header] == expected
        assert [(f.id, f.raw_data) for f in by_query] == expected


def test_resume_mid_generation_has_no_gap_or_duplicate(live):
    """Dropping the connection mid-stream and resuming gives every event exactly once."""
    message_id = submit(live.api, body(max_tokens=48, seed=11))
    first: list = []
    with httpx.stream("GET", f"{live.api}/v1/messages/async/{message_id}/stream", timeout=60) as response:
        from tests.sse import parse_lines

        for frame in parse_lines(response.iter_lines()):
            if frame.event != "ping":
                first.append(frame)
            if len(first) == 4:
                break
    rest = observe(live.api, message_id, headers={"Last-Event-ID": first[-1].id})
    joined = first + rest
    check_grammar(joined)
    assert [(f.id, f.raw_data) for f in joined] == [(f.id, f.raw_data) for f in observe(live.api, message_id)]


def test_bad_cursor_is_400(live):
    """A malformed or unknown cursor is refused, never silently skipped."""
    message_id = submit(live.api, body(max_tokens=4, seed=1))
    observe(live.api, message_id)
    for cursor in ("nonsense", "1-2-3", "99-0"):
        response = httpx.get(
            f"{live.api}/v1/messages/async/{message_id}/stream", headers={"Last-Event-ID": cursor}, timeout=10
        )
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_two_concurrent_observers_agree(live):
    """Two observers watching at once receive the same events."""
    message_id = submit(live.api, body(max_tokens=32, seed=9))
    results: dict[int, list] = {}

    def watch(slot: int) -> None:
        results[slot] = observe(live.api, message_id)

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [(f.id, f.raw_data) for f in results[0]] == [(f.id, f.raw_data) for f in results[1]]
    check_grammar(results[0])


def test_same_seed_same_text_and_stop_reasons(live):
    """Same seed and params give the same text; max_tokens cuts with max_tokens."""
    payload = body("Write a poem about the sea.", max_tokens=20, seed=1234, temperature=0.9)
    first = observe(live.api, submit(live.api, payload))
    second = observe(live.api, submit(live.api, payload))
    assert text_of(first) == text_of(second)
    assert first[-2].data["delta"]["stop_reason"] == "max_tokens"
    assert first[-2].data["usage"]["output_tokens"] == 20
    other = observe(live.api, submit(live.api, {**payload, "seed": 99}))
    assert text_of(other) != text_of(first)


def test_stop_sequence_cuts_the_text(live):
    """A stop sequence taken from the seeded output ends the text right before it."""
    payload = body("Write a poem about the sea.", max_tokens=40, seed=77)
    full = text_of(observe(live.api, submit(live.api, payload)))
    words = full.split()
    stop = " " + words[len(words) // 2]
    frames = observe(live.api, submit(live.api, {**payload, "stop_sequences": [stop]}))
    delta = frames[-2].data["delta"]
    assert delta == {"stop_reason": "stop_sequence", "stop_sequence": stop}
    assert text_of(frames) == full[: full.index(stop)]


def test_duplicate_message_id_is_400_and_starts_nothing(live):
    """A caller's id that already exists is refused with 'already exists'."""
    message_id = submit(live.api, body(max_tokens=4, seed=1), message_id="mine-dup.1")
    assert message_id == "mine-dup.1"
    response = httpx.post(
        f"{live.api}/v1/messages/async",
        params={"message_id": "mine-dup.1"},
        json=body(max_tokens=4),
        timeout=10,
    )
    assert response.status_code == 400
    assert "already exists" in response.json()["error"]["message"]
    observe(live.api, message_id)
    assert status(live.api, message_id)["metadata"]["event_count"] > 0


def test_bad_message_id_is_400(live):
    """A custom id outside [A-Za-z0-9_.:-]{1,128} is refused."""
    response = httpx.post(
        f"{live.api}/v1/messages/async", params={"message_id": "a b/c"}, json=body(max_tokens=4), timeout=10
    )
    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"] == ["query", "message_id"]


def test_unknown_ids_are_404_with_detail(live):
    """Status, stream, cancel and delete of an unknown id answer 404 with 'not found'."""
    base = f"{live.api}/v1/messages/async/nope"
    for method, url in (
        ("GET", f"{base}/status"),
        ("GET", f"{base}/stream"),
        ("POST", f"{base}/cancel"),
        ("DELETE", f"{base}/delete"),
        ("DELETE", base),
    ):
        response = httpx.request(method, url, timeout=10)
        assert response.status_code == 404, (method, url)
        assert "not found" in response.json()["detail"]
        assert response.json()["error"]["type"] == "not_found_error"


def test_every_key_has_a_ttl_after_completion(live):
    """No key of a finished message lives forever."""
    message_id = submit(live.api, body(max_tokens=8, seed=2))
    observe(live.api, message_id)
    wait_status(live.api, message_id, {"completed"})
    keys = list(live.redis.scan_iter(f"{PREFIX}:msg:{{{message_id}}}:*"))
    assert len(keys) >= 3
    for key in keys:
        assert 0 < live.redis.ttl(key) <= 600, key
