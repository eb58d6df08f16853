"""The anthropic provider (official SDK) against a second Sluice, whose /v1/messages speaks Anthropic."""

from __future__ import annotations

import pytest

from deploy.probes import wait_for
from shared.models import ModelSpec, RetryPolicy
from tests.conftest import LiveStack
from workers.providers.anthropic import AnthropicProvider
from workers.providers.base import Finished, Started, TextDelta
from workers.providers.upstream import UpstreamStatusError, UpstreamUnavailable

pytestmark = pytest.mark.integration

REQUEST = {
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Tell me a story."}]}],
    "seed": 3,
}


def provider(base_url: str, model: str = "default") -> AnthropicProvider:
    spec = ModelSpec(
        id="claude-ish",
        provider="anthropic",
        base_url=base_url,
        upstream_model=model,
        retry=RetryPolicy(attempts=2, backoff=0.05),
    )
    return AnthropicProvider.from_spec(spec)


def status_keys(live: LiveStack) -> set[str]:
    return set(live.redis.scan_iter("sluice:msg:*:status"))


def test_streams_the_upstream_message(live):
    """Started carries the upstream's prompt count; text deltas follow; Finished has its usage."""
    events = list(provider(live.api).stream(REQUEST, 10))
    assert isinstance(events[0], Started) and events[0].input_tokens > 0
    assert "".join(e.text for e in events if isinstance(e, TextDelta)).strip()
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.stop_reason == "max_tokens"
    assert finished.output_tokens == 10


def test_an_upstream_400_is_reported_and_not_retried(live):
    """An unknown upstream model is the upstream's 400, passed on as invalid_request_error."""
    with pytest.raises(UpstreamStatusError, match="Unknown model") as caught:
        list(provider(live.api, model="no-such-model").stream(REQUEST, 10))
    assert caught.value.error_type == "invalid_request_error" and caught.value.status == 400


def test_an_unreachable_upstream_is_unavailable():
    """Nobody listening: the SDK's connection error becomes UpstreamUnavailable after the retries."""
    from deploy.probes import free_port

    with pytest.raises(UpstreamUnavailable):
        list(provider(f"http://127.0.0.1:{free_port()}").stream(REQUEST, 10))


def test_closing_the_stream_cancels_the_upstream_message(live):
    """Closing the provider generator hangs up, and the upstream Sluice cancels its generation."""
    before = status_keys(live)
    stream = provider(live.api).stream(REQUEST, 2000)
    for _ in range(3):
        next(stream)
    (key,) = status_keys(live) - before
    stream.close()
    wait_for(
        lambda: live.redis.hget(key, "status") == "cancelled", 20, "the upstream message to be cancelled"
    )
