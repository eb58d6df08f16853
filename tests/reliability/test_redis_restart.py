"""Redis restarts (AOF on): finished streams survive, queued work still runs, everyone reconnects."""

from __future__ import annotations

import pytest

from tests.integration.helpers import check_grammar, text_of
from tests.reliability.helpers import Watcher, chat, post, script_text, status_of, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _frames(api: str, message_id: str):
    return [(f.id, f.event, f.raw_data) for f in Watcher([api], message_id).wait(60)]


def _restart_redis(stack) -> None:
    redis_process = next(p for p in stack.stack.processes if p.name == f"redis-{stack.redis_port}")
    redis_process.stop()
    stack.stack.processes.remove(redis_process)
    stack.stack.start_redis(port=stack.redis_port, persistent=True)


def test_redis_restart_keeps_streams_and_runs_what_was_queued(make_stack):
    """After a restart on the same port and data dir: old streams identical, pending and running
    messages end completed, and the API and worker serve new messages without being restarted."""
    stack = make_stack()
    stack.worker("w1")
    api = stack.start_api()
    stack.stack.wait_ready(api)
    done = post(api, chat(max_tokens=5, model="fast")).json()["message_id"]
    wait_until(lambda: status_of(api, done)["status"] == "completed", 60, "the first message")
    before = _frames(api, done)
    running = post(api, chat(max_tokens=100)).json()["message_id"]
    wait_until(lambda: status_of(api, running)["status"] == "processing", 60, "the long one to run")
    queued = post(api, chat(max_tokens=5, model="fast")).json()["message_id"]
    assert status_of(api, queued)["status"] == "pending"

    _restart_redis(stack)

    assert _frames(api, done) == before
    assert status_of(api, done)["status"] == "completed"
    frames = Watcher([api], running).wait(120)
    check_grammar(frames)
    assert text_of(frames) == script_text(100)
    wait_until(lambda: status_of(api, queued)["status"] == "completed", 120, "the queued message")
    after = post(api, chat(max_tokens=5, model="fast")).json()["message_id"]
    wait_until(lambda: status_of(api, after)["status"] == "completed", 120, "a message sent after")
