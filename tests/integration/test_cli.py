"""The real ``sluice`` command (the venv's console script) against the real stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from deploy.probes import free_port
from tests.integration.helpers import body, check_grammar, observe, submit, text_of, wait_status
from tests.proxy import CutProxy
from tests.sse import Frame

pytestmark = pytest.mark.integration

SLUICE = str(Path(sys.executable).parent / "sluice")
LONG_PROMPT = "Write a very long essay about the history of the ocean."


def run(
    api: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run ``sluice ARGS`` against ``api`` and wait for it."""
    return subprocess.run(
        [SLUICE, *args], env=cli_env(api, env), capture_output=True, text=True, timeout=timeout, check=False
    )


def cli_env(api: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any SLUICE_* variable, pointing the CLI at ``api``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update({"SLUICE_URL": api, "NO_COLOR": "1", **(extra or {})})
    return env


def json_lines(stdout: str) -> list[Frame]:
    """``--json`` output as frames."""
    frames = []
    for line in stdout.splitlines():
        item = json.loads(line)
        frames.append(Frame(item["id"], item["event"], item["data"], json.dumps(item["data"])))
    return frames


def api_port(api: str) -> int:
    port = urlsplit(api).port
    assert port is not None
    return port


def test_submit_prints_only_the_id(live):
    """``sluice submit`` prints the new message's id, and the message exists."""
    result = run(live.api, "submit", "Name three colours.", "--max-tokens", "8", "--seed", "3")
    assert result.returncode == 0, result.stderr
    message_id = result.stdout.strip()
    assert message_id and "\n" not in message_id
    assert wait_status(live.api, message_id, {"completed"}, timeout=240)["metadata"]["priority"] == 0


def test_submit_sends_every_option(live):
    """Model, max tokens, priority, system, seed, temperature and the caller's id reach the API."""
    result = run(
        live.api,
        "submit",
        "Say hi.",
        "--model=default",
        "--max-tokens=5",
        "--priority=-2",
        "--system=Be brief.",
        "--seed=11",
        "--temperature=0.3",
        "--message-id=cli-options-1",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cli-options-1"
    final = wait_status(live.api, "cli-options-1", {"completed"}, timeout=240)
    assert final["metadata"]["priority"] == -2 and final["metadata"]["band"] == 3
    assert final["metadata"]["output_tokens"] <= 5


def test_watch_prints_the_text_and_exits_zero(live):
    """``sluice watch`` writes exactly the stream's text to stdout and a summary line to stderr."""
    message_id = submit(live.api, body("Tell me a short story about a cat.", max_tokens=40, seed=7))
    result = run(live.api, "watch", message_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout == text_of(observe(live.api, message_id)) + "\n"
    assert f"{message_id} completed · max_tokens · 40 tokens" in result.stderr


def test_chat_json_prints_every_event(live):
    """``sluice chat --json`` prints each stored event once, as a JSON line with its id."""
    result = run(live.api, "chat", "Name three colours.", "--max-tokens", "16", "--seed", "5", "--json")
    assert result.returncode == 0, result.stderr
    frames = json_lines(result.stdout)
    check_grammar(frames)
    stored = observe(live.api, frames[0].data["message"]["id"])
    assert [(f.id, f.data) for f in frames] == [(f.id, f.data) for f in stored]


def test_watch_resumes_after_a_dropped_connection(live):
    """A stream cut mid-frame is resumed from the last event id: no gap, no duplicate."""
    message_id = submit(live.api, body(LONG_PROMPT, max_tokens=60, seed=2))
    proxy = CutProxy(api_port(live.api), cut_after=1500).start()
    try:
        result = run(proxy.url, "watch", message_id, "--json")
    finally:
        proxy.stop()
    assert result.returncode == 0, result.stderr
    assert proxy.cut_done == 1 and "resuming, attempt 1" in result.stderr
    frames = json_lines(result.stdout)
    stored = observe(live.api, message_id)
    assert [f.id for f in frames] == [f.id for f in stored]
    first, second = proxy.stream_requests()[:2]
    assert "last-event-id" not in first.lower()
    resumed_from = next(
        line.split(":", 1)[1].strip()
        for line in second.split("\r\n")
        if line.lower().startswith("last-event-id:")
    )
    assert resumed_from in {f.id for f in stored[:-1]}


def test_watch_exits_4_when_cancelled(live):
    """Cancelling a watched message ends ``sluice watch`` with exit code 4 and a 'cancelled' summary."""
    message_id = submit(live.api, body(LONG_PROMPT, max_tokens=3000, seed=1))
    watcher = subprocess.Popen(
        [SLUICE, "watch", message_id],
        env=cli_env(live.api),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        watcher.stdout.read(20)  # the answer is streaming
        cancelled = run(live.api, "cancel", message_id)
        assert cancelled.returncode == 0 and cancelled.stdout.strip() == f"{message_id}: cancelled"
        _, stderr = watcher.communicate(timeout=240)
    finally:
        watcher.kill()
    assert watcher.returncode == 4, stderr
    assert f"{message_id} cancelled · cancelled" in stderr


def test_status_and_delete(live):
    """``status --json`` shows the API's status body; ``delete`` removes the message."""
    message_id = submit(live.api, body(max_tokens=4, seed=1))
    wait_status(live.api, message_id, {"completed"}, timeout=240)
    shown = run(live.api, "status", message_id, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "completed"
    table = run(live.api, "status", message_id)
    assert "completed" in table.stdout and "queue_wait_ms" in table.stdout
    deleted = run(live.api, "delete", message_id)
    assert deleted.returncode == 0 and deleted.stdout.strip() == f"{message_id}: deleted"
    assert httpx.get(f"{live.api}/v1/messages/async/{message_id}/status", timeout=10).status_code == 404


def test_api_errors_are_one_line(live):
    """An API refusal is one line on stderr naming the status, type and field, with exit code 1."""
    result = run(live.api, "submit", "")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "sluice: error: 400 invalid_request_error: Invalid request body: messages.0.content: "
        "Content must not be empty."
    ]
    missing = run(live.api, "watch", "no-such-message")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == (
        "sluice: error: 404 not_found_error: Stream with message_id no-such-message not found"
    )


def test_unreachable_api_is_one_line():
    """No API at the URL: one line saying so, exit code 1."""
    port = free_port()
    result = run(f"http://127.0.0.1:{port}", "status", "anything")
    assert result.returncode == 1
    assert result.stderr.startswith(f"sluice: error: cannot reach http://127.0.0.1:{port}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_api_key_is_sent_in_both_headers(live):
    """The key (flag or SLUICE_API_KEY) goes out as x-api-key and as Authorization: Bearer."""
    proxy = CutProxy(api_port(live.api)).start()
    try:
        run(proxy.url, "status", "any-id", "--api-key", "key-from-flag")
        run(proxy.url, "status", "any-id", env={"SLUICE_API_KEY": "key-from-env"})
    finally:
        proxy.stop()
    flag, env = (head.lower() for head in proxy.requests)
    assert "x-api-key: key-from-flag" in flag and "authorization: bearer key-from-flag" in flag
    assert "x-api-key: key-from-env" in env and "authorization: bearer key-from-env" in env
