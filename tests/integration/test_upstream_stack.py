"""End to end: a Sluice stack whose models file routes models to upstream servers.

The upstream models run on the ``sluice.upstream`` queue, served by a thread-pool worker.
Upstreams: llama-cpp-python's OpenAI-compatible server, the faulty server, and a second
Sluice stack (``live``) reached through its Anthropic-compatible ``/v1/messages``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import pytest

from deploy.probes import free_port, wait_for
from deploy.stack import Stack
from tests.conftest import LiveStack
from tests.integration.faulty_upstream import AGENT_ARGUMENTS, WORDS, FaultyUpstream
from tests.integration.helpers import body, check_grammar, observe, status, submit, text_of, wait_status
from tests.integration.upstreams import LLAMA_ALIAS, faulty_upstream, llama_server  # noqa: F401

pytestmark = pytest.mark.integration

MODELS = """
[models.via-openai]
provider = "openai"
base_url = "{llama}"
upstream_model = "{alias}"
aliases = ["llama-server"]
[models.via-openai.options]
response_format = "json_object"

[models.via-anthropic]
provider = "anthropic"
base_url = "{sluice}"
upstream_model = "default"

[models.flaky]
provider = "openai"
base_url = "{faulty}/flaky/v1"
[models.flaky.retry]
attempts = 4
backoff = 0.05

[models.dropper]
provider = "openai"
base_url = "{faulty}/drop/v1"

[models.slowfirst]
provider = "openai"
base_url = "{faulty}/slowfirst/v1"
[models.slowfirst.timeouts]
first_token = 120

[models.endless]
provider = "openai"
base_url = "{faulty}/endless/v1"

[models.agent]
provider = "openai"
base_url = "{faulty}/agent/v1"
upstream_model = "agent-7b"

[models.agent-over-anthropic]
provider = "anthropic"
base_url = "{itself}"
upstream_model = "scripted-agent"

[models.scripted-agent]
provider = "scripted"
queue = "sluice.upstream"
[models.scripted-agent.options]
tokens_per_second = 200
script = [
  {{thinking = "The user wants the weather.", signature = "sig-1"}},
  {{text = "Let me check."}},
  {{tool_use = "get_weather", id = "toolu_1", input = {{city = "Paris"}}}},
]
"""


@pytest.fixture(scope="module")
def upstream_api(
    tmp_path_factory: pytest.TempPathFactory,
    llama_server: str,  # noqa: F811
    faulty_upstream: FaultyUpstream,  # noqa: F811
    live: LiveStack,
) -> Iterator[str]:
    """A stack serving only upstream models: redis-server, a thread-pool worker, the API."""
    var = tmp_path_factory.mktemp("upstream-stack")
    models = var / "models.toml"
    port = free_port()
    models.write_text(
        MODELS.format(
            llama=llama_server,
            alias=LLAMA_ALIAS,
            sluice=live.api,
            faulty=f"http://127.0.0.1:{faulty_upstream.port}",
            itself=f"http://127.0.0.1:{port}",
        )
    )
    stack = Stack(var, env={"SLUICE_MODELS_FILE": str(models), "SLUICE_LOG_JSON": "false"})
    try:
        stack.start_redis(persistent=False)
        stack.start_worker(f"upstream-{os.getpid()}", queues="sluice.upstream", pool="threads", concurrency=8)
        api = stack.start_api(port)
        stack.wait_ready(api, timeout=120)
    except Exception:
        stack.stop()
        raise
    yield api
    stack.stop()


def test_a_model_routed_to_an_openai_server_streams_through_sluice(upstream_api):
    """Submit to a model served by llama-cpp-python's server: a well-formed stream, on the upstream queue."""
    message_id = submit(
        upstream_api, body("Tell me about cats.", model="llama-server", max_tokens=16, seed=1)
    )
    frames = observe(upstream_api, message_id)
    check_grammar(frames)
    assert text_of(frames).strip()
    assert frames[-2].data["delta"]["stop_reason"] == "max_tokens"
    final = status(upstream_api, message_id)
    assert final["status"] == "completed" and final["metadata"]["queue"] == "sluice.upstream"


def test_a_model_routed_to_another_sluice_over_the_anthropic_api(upstream_api, live):
    """The anthropic provider streams from a second Sluice's /v1/messages, events passed through."""
    message_id = submit(upstream_api, body("Say hello.", model="via-anthropic", max_tokens=12))
    frames = observe(upstream_api, message_id)
    check_grammar(frames)
    assert frames[0].data["message"]["usage"]["input_tokens"] > 0
    assert text_of(frames).strip()
    assert status(upstream_api, message_id)["status"] == "completed"


def test_upstream_5xx_before_the_first_token_is_retried(upstream_api, faulty_upstream):  # noqa: F811
    """Two 500s then success: the observer sees one clean stream."""
    message_id = submit(upstream_api, body(model="flaky"))
    frames = observe(upstream_api, message_id)
    check_grammar(frames)
    assert text_of(frames) == "".join(WORDS)
    assert len(faulty_upstream.log("flaky")["requests"]) == 3


def test_an_upstream_cut_mid_stream_ends_in_an_error(upstream_api):
    """After the first token, a dropped upstream ends the stream with an error event and status error."""
    message_id = submit(upstream_api, body(model="dropper"))
    frames = observe(upstream_api, message_id)
    check_grammar(frames)  # the open text block is closed before the error event
    assert [f.event for f in frames[-2:]] == ["content_block_stop", "error"]
    assert text_of(frames) == "".join(WORDS[:2])
    final = wait_status(upstream_api, message_id, {"error"})
    assert "mid-stream" in final["error_message"] or "cut off" in final["error_message"]


def test_cancel_closes_the_upstream_connection(upstream_api, faulty_upstream):  # noqa: F811
    """Cancelling a running upstream generation hangs up on the upstream and ends as cancelled."""
    message_id = submit(upstream_api, body(model="endless", max_tokens=4000))
    deltas = []

    def on_frame(frame) -> None:
        if frame.event == "content_block_delta":
            deltas.append(frame)
            if len(deltas) == 3:
                response = httpx.post(f"{upstream_api}/v1/messages/async/{message_id}/cancel", timeout=10)
                assert response.status_code == 200

    frames = observe(upstream_api, message_id, on_frame=on_frame)
    check_grammar(frames)
    assert frames[-2].data["delta"]["stop_reason"] == "cancelled"
    wait_for(lambda: faulty_upstream.log("endless")["hangups"] >= 1, 10, "the upstream to see the hang-up")


def test_cancel_while_waiting_for_the_first_token_is_prompt(upstream_api):
    """A cancel while the upstream has not sent a token ends the message at once, well-formed."""
    message_id = submit(upstream_api, body(model="slowfirst"))
    wait_status(upstream_api, message_id, {"processing"})
    started = time.monotonic()
    response = httpx.post(f"{upstream_api}/v1/messages/async/{message_id}/cancel", timeout=30)
    assert response.json()["status"] == "cancelled"
    assert time.monotonic() - started < 20  # far below the 120 s first-token timeout
    frames = observe(upstream_api, message_id)
    check_grammar(frames)
    assert [f.event for f in frames] == ["message_start", "message_delta", "message_stop"]
    assert frames[1].data["delta"]["stop_reason"] == "cancelled"


def test_scripted_agent_plays_thinking_text_and_a_tool_call(upstream_api):
    """A scripted model produces thinking, text and tool_use blocks with a tool_use stop reason."""
    message_id = submit(upstream_api, body(model="scripted-agent"))
    frames = observe(upstream_api, message_id)
    check_grammar(frames)
    blocks = [f.data["content_block"]["type"] for f in frames if f.event == "content_block_start"]
    assert blocks == ["thinking", "text", "tool_use"]
    tool_json = "".join(
        f.data["delta"]["partial_json"]
        for f in frames
        if f.event == "content_block_delta" and f.data["delta"]["type"] == "input_json_delta"
    )
    assert tool_json == '{"city": "Paris"}'
    assert frames[-2].data["delta"]["stop_reason"] == "tool_use"


def test_an_openai_agent_stream_becomes_anthropic_blocks(upstream_api, faulty_upstream):  # noqa: F811
    """reasoning → thinking, tool_calls → tool_use with input_json_delta; fields reach the upstream."""
    message_id = submit(
        upstream_api,
        body("Weather in Paris?", model="agent", priority=-3, seed=9, temperature=0.5, max_tokens=77),
    )
    frames = observe(upstream_api, message_id)
    check_grammar(frames)
    starts = [f.data["content_block"] for f in frames if f.event == "content_block_start"]
    assert [b["type"] for b in starts] == ["thinking", "text", "tool_use"]
    assert starts[2]["id"] == "call_7" and starts[2]["name"] == "get_weather"
    tool_json = "".join(
        f.data["delta"]["partial_json"]
        for f in frames
        if f.event == "content_block_delta" and f.data["delta"]["type"] == "input_json_delta"
    )
    assert tool_json == "".join(AGENT_ARGUMENTS)
    assert frames[-2].data["delta"]["stop_reason"] == "tool_use"
    assert frames[-2].data["usage"] == {"output_tokens": 9, "input_tokens": 4}  # usage came last
    sent = faulty_upstream.log("agent")["bodies"][-1]
    assert (sent["model"], sent["priority"], sent["seed"], sent["temperature"], sent["max_tokens"]) == (
        "agent-7b",
        -3,
        9,
        0.5,
        77,
    )
    assert sent["messages"] == [{"role": "user", "content": "Weather in Paris?"}]
    metadata = wait_status(upstream_api, message_id, {"completed"})["metadata"]
    assert (metadata["input_tokens"], metadata["output_tokens"]) == (4, 9)  # the upstream's usage
    assert metadata["model_ran"] == "faulty"


def test_thinking_and_tool_use_pass_through_the_anthropic_provider(upstream_api):
    """Over the Anthropic protocol, thinking (with signature) and tool_use blocks arrive intact."""
    message_id = submit(upstream_api, body(model="agent-over-anthropic"))
    frames = observe(upstream_api, message_id)
    check_grammar(frames)
    starts = [f.data["content_block"] for f in frames if f.event == "content_block_start"]
    assert [b["type"] for b in starts] == ["thinking", "text", "tool_use"]
    assert starts[2]["id"] == "toolu_1" and starts[2]["name"] == "get_weather"
    deltas = [f.data["delta"] for f in frames if f.event == "content_block_delta"]
    assert "".join(d.get("thinking", "") for d in deltas) == "The user wants the weather."
    assert [d["signature"] for d in deltas if d["type"] == "signature_delta"] == ["sig-1"]
    assert "".join(d.get("partial_json", "") for d in deltas) == '{"city": "Paris"}'
    assert frames[-2].data["delta"]["stop_reason"] == "tool_use"
