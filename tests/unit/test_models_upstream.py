"""The registry's upstream fields: base URL, upstream name, key variable, timeouts, retry, concurrency."""

import httpx
import pytest

from shared.models import RegistryError, RetryPolicy, Timeouts, parse_registry
from shared.settings import Settings
from workers.providers.upstream import parse_retry_after

VLLM = """
[models.qwen]
provider = "openai"
base_url = "http://vllm:8000/v1"
upstream_model = "Qwen/Qwen2.5-7B-Instruct"
api_key_env = "VLLM_KEY"
aliases = ["q"]
concurrency = 4
capabilities = ["tools", "json_schema"]
[models.qwen.timeouts]
connect = 2
first_token = 30
idle = 5
[models.qwen.retry]
attempts = 5
backoff = 0.1
"""


def test_upstream_model_fields_are_read():
    """Every upstream key of the TOML table lands in the ModelSpec, and the queue defaults to upstream."""
    spec = parse_registry(VLLM, Settings()).resolve("q")
    assert spec is not None
    assert (spec.base_url, spec.upstream_model, spec.api_key_env) == (
        "http://vllm:8000/v1",
        "Qwen/Qwen2.5-7B-Instruct",
        "VLLM_KEY",
    )
    assert spec.queue == "sluice.upstream" and spec.concurrency == 4
    assert spec.capabilities == {"tools", "json_schema"}
    assert spec.timeouts == Timeouts(connect=2, first_token=30, idle=5)
    assert spec.retry == RetryPolicy(attempts=5, backoff=0.1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[models.x]\nprovider = 'openai'\n", "needs 'base_url'"),
        ("[models.x]\nprovider = 'openai'\nbase_url = 'u'\n[models.x.timeouts]\nfirst = 1\n", "unknown keys"),
        ("[models.x]\nprovider = 'openai'\nbase_url = 'u'\n[models.x.timeouts]\nidle = 0\n", "idle must be"),
        ("[models.x]\nprovider = 'openai'\nbase_url = 'u'\nconcurrency = 0\n", "concurrency"),
        ("[models.x]\nprovider = 'anthropic'\napi_key_env = ''\n", "api_key_env"),
        ("[models.x]\nprovider = 'anthropic'\ncapabilities = 'tools'\n", "capabilities"),
        ("[models.x]\nprovider = 'anthropic'\n[models.x.retry]\njitter = 1\n", "jitter"),
    ],
)
def test_bad_upstream_fields_are_refused_clearly(text, message):
    """A wrong upstream field fails with a message naming it."""
    with pytest.raises(RegistryError, match=message):
        parse_registry(text, Settings())


def test_retry_policy_backs_off_exponentially_and_stops():
    """Delays double up to the cap; after ``attempts`` tries there is no more delay."""
    policy = RetryPolicy(attempts=4, backoff=0.5, backoff_max=1.5)
    assert [policy.delay(n) for n in range(4)] == [0.5, 1.0, 1.5, None]


def test_retry_after_is_honoured_up_to_its_cap():
    """A Retry-After within retry_after_max is waited for exactly; a longer one gives up."""
    policy = RetryPolicy(attempts=3, retry_after_max=10)
    assert policy.delay(0, retry_after=7) == 7
    assert policy.delay(0, retry_after=11) is None


def test_retry_after_headers_parse_in_every_form():
    """Seconds, an HTTP date, and retry-after-ms all give seconds to wait."""
    assert parse_retry_after(httpx.Headers({"retry-after": "3"})) == 3
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    date = httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:05 GMT"})
    assert parse_retry_after(date, now=1445412480.0) == pytest.approx(5.0)
    assert parse_retry_after(httpx.Headers({})) is None


def test_the_readme_examples_parse_and_build_their_providers():
    """Every example model in docs/MODELS.md is a valid registry entry whose provider builds (no I/O)."""
    import re
    from pathlib import Path

    from workers.providers.registry import build_provider

    readme = (Path(__file__).resolve().parents[2] / "docs" / "MODELS.md").read_text()
    examples = next(b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if "[models.qwen]" in b)
    registry = parse_registry(examples, Settings())
    built = [build_provider(spec) for spec in registry if spec.provider != "llama_cpp"]
    assert len(built) == len(list(registry)) - 1
    assert registry.resolve("gpt").queue == "sluice.upstream"


def test_backoff_waits_are_jittered_but_retry_after_is_exact():
    """Backoff sleeps fall within [delay * (1 - jitter), delay]; a Retry-After is slept exactly."""
    from workers.providers.upstream import UpstreamStatusError, UpstreamUnavailable, with_retries

    policy = RetryPolicy(attempts=2, backoff=1.0, jitter=0.5)
    for failure in (UpstreamUnavailable("down"), UpstreamStatusError(429, "slow", retry_after=2.0)):
        slept: list[float] = []
        calls = iter([failure])

        def once(calls=calls):
            for exc in calls:
                raise exc
            return "ok"

        assert with_retries(once, policy, "m", sleep=slept.append) == "ok"
        if failure.retry_after is None:
            assert 0.5 <= slept[0] <= 1.0
        else:
            assert slept == [2.0]
