"""Per-key limits protect the shared parts from one key (real stack: gunicorn, Redis, worker)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest

from tests.reliability.helpers import Watcher, chat, post, queued_tasks, status_of, wait_until
from tests.security.conftest import KEY_A, KEY_B, OPERATOR, auth

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@contextlib.contextmanager
def opened(api: str, message_id: str, key: str) -> Iterator[httpx.Response]:
    """An SSE response held open (its headers read) until the block ends."""
    client = httpx.Client(timeout=30)
    try:
        with client.stream("GET", f"{api}/v1/messages/async/{message_id}/stream", headers=auth(key)) as r:
            yield r
    finally:
        client.close()


def test_open_streams_per_key_are_capped_and_come_back_when_closed(make_stack):
    """A key holding its maximum of open streams gets 429 for one more; another key does not; a
    closed stream gives its slot back."""
    stack = make_stack(SLUICE_MAX_STREAMS_PER_KEY="3")
    api = stack.start_api()
    ids = [post(api, chat(), auth(KEY_A)).json()["message_id"] for _ in range(4)]  # no worker: pending
    with contextlib.ExitStack() as held:
        streams = [held.enter_context(opened(api, message_id, KEY_A)) for message_id in ids[:3]]
        assert all(stream.status_code == 200 for stream in streams)
        refused = httpx.get(f"{api}/v1/messages/async/{ids[3]}/stream", headers=auth(KEY_A), timeout=10)
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert refused.headers["Retry-After"] == "1"
        other = post(api, chat(), auth(KEY_B)).json()["message_id"]
        with opened(api, other, KEY_B) as stream:
            assert stream.status_code == 200

    # Closed: the server notices at its next write (a ping) and releases the slots.
    def reopened() -> bool:
        with opened(api, ids[3], KEY_A) as stream:
            return stream.status_code == 200

    assert wait_until(reopened, 30, "a slot back after closing")


def test_many_streams_share_a_bounded_number_of_tail_connections(make_stack):
    """Twelve observed streams on an API process allowed two tail connections hold at most two,
    and every observer still gets its whole stream."""
    stack = make_stack(SLUICE_API_TAIL_CONNECTIONS="2")
    api = stack.start_api()
    keys = [KEY_A, KEY_B] * 6
    ids = [post(api, chat(model="fast", max_tokens=8), auth(key)).json()["message_id"] for key in keys]
    watchers = [Watcher([api], message_id, auth(key)) for message_id, key in zip(ids, keys, strict=True)]

    def tails() -> list[dict[str, str]]:
        return [c for c in stack.redis.client_list() if c.get("name") == "sluice-api-tail"]

    wait_until(lambda: len(tails()) >= 2, 30, "tail connections")
    assert len(tails()) == 2
    stack.worker("w1")
    for watcher in watchers:
        frames = watcher.wait(60)
        assert frames[-1].event == "message_stop"
    assert len(tails()) <= 2


def test_a_key_over_its_storage_quota_is_refused_and_others_are_not(make_stack):
    """Stored request bytes count against the key's quota: over it, 429 and nothing stored; another
    key is unaffected; a delete gives the bytes back."""
    stack = make_stack(SLUICE_MAX_STORED_BYTES_PER_KEY="20000")
    api = stack.start_api()
    big = chat(system="x" * 6000)
    kept = [post(api, big, auth(KEY_A)) for _ in range(3)]
    assert all(answer.status_code == 200 for answer in kept)
    before = len(list(stack.redis.scan_iter("sluice:msg:*:status")))
    refused = post(api, big, auth(KEY_A))
    assert refused.status_code == 429, refused.text
    assert "quota" in refused.json()["error"]["message"]
    assert len(list(stack.redis.scan_iter("sluice:msg:*:status"))) == before
    assert post(api, big, auth(KEY_B)).status_code == 200
    first = kept[0].json()["message_id"]
    assert (
        httpx.delete(f"{api}/v1/messages/async/{first}", headers=auth(KEY_A), timeout=10).status_code == 200
    )
    assert post(api, big, auth(KEY_A)).status_code == 200


def test_the_most_urgent_band_is_reserved_for_operator_keys(make_stack):
    """An ordinary key asking for priority -5 gets 400 at ["priority"] and nothing is stored; -4
    is allowed; an operator key gets band 0."""
    stack = make_stack()
    api = stack.start_api()
    refused = post(api, chat(priority=-5), auth(KEY_A))
    assert refused.status_code == 400
    assert refused.json()["detail"][0]["loc"] == ["priority"]
    assert not list(stack.redis.scan_iter("sluice:msg:*:status"))
    allowed = post(api, chat(priority=-4), auth(KEY_A)).json()["message_id"]
    assert status_of(api, allowed, auth(KEY_A))["metadata"]["band"] == 1
    urgent = post(api, chat(priority=-5), auth(OPERATOR)).json()["message_id"]
    assert status_of(api, urgent, auth(OPERATOR))["metadata"]["band"] == 0


def test_validate_and_count_tokens_spend_the_keys_rate(make_stack):
    """Body-only endpoints count against the key's rate: past it, 429 with Retry-After; the other
    key still has its own."""
    stack = make_stack(SLUICE_RATE_LIMIT_PER_MINUTE="3")
    api = stack.start_api()
    body = chat()
    for path in ("validate", "validate", "count_tokens"):
        answer = httpx.post(f"{api}/v1/messages/{path}", json=body, headers=auth(KEY_A), timeout=10)
        assert answer.status_code != 429, (path, answer.text)
    limited = httpx.post(f"{api}/v1/messages/validate", json=body, headers=auth(KEY_A), timeout=10)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    fresh = httpx.post(f"{api}/v1/messages/validate", json=body, headers=auth(KEY_B), timeout=10)
    assert fresh.status_code == 200 and fresh.json()["valid"] is True


def test_made_up_http_methods_add_no_metric_series(make_stack):
    """Thirty requests with invented methods add no series: they count under method="other"."""
    stack = make_stack()
    api = stack.start_api()

    def series() -> set[str]:
        text = httpx.get(f"{api}/metrics", timeout=10).text
        return {
            line.rsplit(" ", 1)[0] for line in text.splitlines() if line.startswith("sluice_http_requests")
        }

    httpx.get(f"{api}/health", timeout=10)
    before = series()
    for index in range(30):
        httpx.request(f"HACK{index}", f"{api}/health", timeout=10)
    after = series()
    assert not any("HACK" in line for line in after)
    assert any('method="other"' in line for line in after)
    assert len(after - before) <= 2  # the "other" series (total and created), once


def test_redis_at_maxmemory_refuses_new_work_with_529_and_evicts_nothing(make_stack):
    """With Redis full (maxmemory, noeviction) a submit is 529 overloaded_error, not a 500; every
    message accepted before, and its queued task, is still there."""
    stack = make_stack(SLUICE_REDIS_MAXMEMORY="4mb", SLUICE_MAX_STORED_BYTES_PER_KEY="0")
    api = stack.start_api()
    assert stack.redis.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    big = chat(system="x" * 200_000)
    accepted: list[str] = []
    for _ in range(60):
        answer = post(api, big, auth(KEY_A))
        if answer.status_code != 200:
            break
        accepted.append(answer.json()["message_id"])
    assert answer.status_code == 529, answer.text
    assert answer.json()["error"]["type"] == "overloaded_error"
    assert accepted
    for message_id in accepted:
        assert status_of(api, message_id, auth(KEY_A))["status"] == "pending"
    assert queued_tasks(stack.redis) == len(accepted)
