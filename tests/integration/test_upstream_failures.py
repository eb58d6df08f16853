"""The openai provider against a real HTTP server that misbehaves on purpose."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.probes import free_port, wait_for
from shared.models import ModelSpec, RetryPolicy, Timeouts
from tests.integration.faulty_upstream import AGENT_ARGUMENTS, WORDS, FaultyUpstream
from workers.providers.base import (
    Finished,
    ProviderError,
    Started,
    TextDelta,
    ThinkingDelta,
    ToolInputDelta,
    ToolUseStart,
)
from workers.providers.openai import OpenAIProvider
from workers.providers.upstream import UpstreamStatusError, UpstreamTimeout, UpstreamUnavailable

REQUEST = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultyUpstream]:
    server = FaultyUpstream().start()
    yield server
    server.stop()


def provider(base_url: str, **spec_fields) -> OpenAIProvider:
    fields = {
        "timeouts": Timeouts(connect=2, first_token=10, idle=10),
        "retry": RetryPolicy(attempts=3, backoff=0.05, backoff_max=0.2),
        **spec_fields,
    }
    return OpenAIProvider.from_spec(ModelSpec(id="m", provider="openai", base_url=base_url, **fields))


def text(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_a_healthy_stream_gives_text_usage_and_the_upstreams_model(upstream):
    """A full stream becomes Started, the text deltas and a Finished with upstream usage."""
    events = list(provider(upstream.base_url("ok")).stream(REQUEST, 50))
    assert events[0] == Started(0, "faulty")
    assert text(events) == "".join(WORDS)
    assert events[-1] == Finished("end_turn", 6, 4)


def test_5xx_before_the_first_token_is_retried_until_it_succeeds(upstream):
    """Two 500s, then success: the caller sees only the successful stream."""
    events = list(provider(upstream.base_url("flaky")).stream(REQUEST, 50))
    assert text(events) == "".join(WORDS)
    assert len(upstream.log("flaky")["requests"]) == 3


def test_retries_are_bounded(upstream):
    """An upstream that keeps failing is tried ``attempts`` times, then the 503 is reported."""
    with pytest.raises(UpstreamStatusError, match=r"503: busy \(after 3 attempts\)") as caught:
        list(provider(upstream.base_url("always500")).stream(REQUEST, 50))
    assert caught.value.error_type == "overloaded_error"
    assert len(upstream.log("always500")["requests"]) == 3


def test_429_waits_for_retry_after(upstream):
    """After a 429 with Retry-After: 1 the retry comes no sooner than a second later."""
    events = list(provider(upstream.base_url("ratelimit")).stream(REQUEST, 50))
    assert text(events) == "".join(WORDS)
    first, second = upstream.log("ratelimit")["requests"]
    assert second - first >= 0.95


def test_a_4xx_is_not_retried_and_keeps_the_upstreams_message(upstream):
    """A 400 fails at once as invalid_request_error with the upstream's own words."""
    with pytest.raises(UpstreamStatusError, match="model does not exist") as caught:
        list(provider(upstream.base_url("refuse400")).stream(REQUEST, 50))
    assert caught.value.error_type == "invalid_request_error"
    assert len(upstream.log("refuse400")["requests"]) == 1


def test_connection_refused_is_retried_then_reported():
    """Nobody listening: every attempt fails to connect, then the error names the upstream."""
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(UpstreamUnavailable, match=r"127\.0\.0\.1"):
        list(provider(url).stream(REQUEST, 50))


def test_a_stream_cut_after_the_first_token_is_an_error(upstream):
    """Once text has flowed, a dropped connection is a provider error, not a retry or a clean end."""
    stream = provider(upstream.base_url("drop")).stream(REQUEST, 50)
    assert isinstance(next(stream), Started)
    assert next(stream) == TextDelta(WORDS[0])
    with pytest.raises(ProviderError, match=r"connection lost mid-stream|cut off"):
        list(stream)
    assert len(upstream.log("drop")["requests"]) == 1


def test_first_token_timeout(upstream):
    """No token within first_token seconds ends with a timeout naming the wait."""
    slow = provider(
        upstream.base_url("slowfirst"),
        timeouts=Timeouts(connect=2, first_token=0.5, idle=10),
        retry=RetryPolicy(attempts=1),
    )
    with pytest.raises(UpstreamTimeout, match=r"no first token within 0\.5s"):
        list(slow.stream(REQUEST, 50))


def test_idle_timeout_between_tokens(upstream):
    """A stream that stalls after its first token ends with an idle timeout."""
    stalled = provider(upstream.base_url("stall"), timeouts=Timeouts(connect=2, first_token=10, idle=0.5))
    stream = stalled.stream(REQUEST, 50)
    assert isinstance(next(stream), Started) and next(stream) == TextDelta(WORDS[0])
    with pytest.raises(UpstreamTimeout, match=r"no token within 0\.5s"):
        next(stream)


def test_closing_the_stream_closes_the_upstream_connection(upstream):
    """Closing the provider generator (what cancel does) makes the upstream see the hang-up."""
    stream = provider(upstream.base_url("endless")).stream(REQUEST, 10_000)
    for _ in range(4):
        next(stream)
    stream.close()
    wait_for(lambda: upstream.log("endless")["hangups"] == 1, 10, "the upstream to see the hang-up")


def test_concurrency_limits_requests_in_flight(upstream):
    """With concurrency = 1, a second stream waits until the first one is closed."""
    import threading

    limited = provider(upstream.base_url("endless"), concurrency=1)
    first = limited.stream(REQUEST, 10_000)
    next(first)
    before = len(upstream.log("endless")["requests"])
    second_started = threading.Event()

    def second() -> None:
        stream = limited.stream(REQUEST, 10_000)
        next(stream)
        second_started.set()
        stream.close()

    worker = threading.Thread(target=second, daemon=True)
    worker.start()
    assert not second_started.wait(0.5)
    assert len(upstream.log("endless")["requests"]) == before
    first.close()
    assert second_started.wait(10)
    worker.join(10)


def test_reasoning_and_tool_call_chunks_become_thinking_and_tool_use(upstream):
    """reasoning_content, content and a streamed tool call arrive as their provider events, then tool_use."""
    events = list(provider(upstream.base_url("agent")).stream(REQUEST, 50))
    assert [type(e) for e in events[:5]] == [Started, ThinkingDelta, ThinkingDelta, TextDelta, ToolUseStart]
    assert events[4] == ToolUseStart("call_7", "get_weather")
    assert "".join(e.partial_json for e in events if isinstance(e, ToolInputDelta)) == "".join(
        AGENT_ARGUMENTS
    )
    assert events[-1] == Finished("tool_use", 9, 4)
