"""A worker SIGKILLed mid-generation: the same stream is resumed, each delta exactly once."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from shared.keys import message_keys
from tests.integration.helpers import check_grammar, text_of
from tests.reliability.helpers import Watcher, chat, post, script_text, status_of, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SKELETON = ["message_start", "content_block_start", "content_block_stop", "message_delta", "message_stop"]


def _start(make_stack, **env):
    stack = make_stack(**env)
    stack.worker("w1")
    api = stack.start_api()
    stack.stack.wait_ready(api)
    return stack, api


def _running(stack, api, tokens: int, deltas: int, **fields):
    """Submit, watch, and wait until ``deltas`` text deltas were streamed."""
    message_id = post(api, chat(max_tokens=tokens, **fields)).json()["message_id"]
    watcher = Watcher([api], message_id)
    wait_until(
        lambda: (
            watcher.done.is_set() or sum(f.event == "content_block_delta" for f in watcher.frames) >= deltas
        ),
        60,
        "deltas",
    )
    assert not watcher.done.is_set(), [f.event for f in watcher.frames][-3:]
    return message_id, watcher


def _worker_pid(stack, message_id: str) -> int:
    return int(stack.redis.hget(message_keys(message_id).status, "worker_pid"))


def test_killed_child_is_resumed_and_every_delta_arrives_once(make_stack):
    """SIGKILL of the prefork child running a task: one message_start, the exact text, one end."""
    stack, api = _start(make_stack)
    message_id, watcher = _running(stack, api, 60, 10)
    killed = _worker_pid(stack, message_id)
    os.kill(killed, signal.SIGKILL)
    frames = watcher.wait(90)
    check_grammar(frames)
    assert [f.event for f in frames if f.event != "content_block_delta"] == SKELETON
    assert text_of(frames) == script_text(60)
    assert frames[-2].data["usage"]["output_tokens"] == 60
    final = status_of(api, message_id)
    assert final["status"] == "completed"
    status_hash = stack.redis.hgetall(message_keys(message_id).status)
    assert status_hash["resumes"] == "1" and int(status_hash["worker_pid"]) != killed


def test_killed_worker_is_replaced_and_the_new_one_resumes(make_stack):
    """SIGKILL of a whole worker (main process and child); a new worker finishes the same stream."""
    stack, api = _start(make_stack)
    message_id, watcher = _running(stack, api, 60, 10)
    stack.workers[0].signal(signal.SIGKILL)
    stack.workers[0].popen.wait(10)
    stack.worker("w2")
    frames = watcher.wait(90)
    check_grammar(frames)
    assert [f.event for f in frames if f.event != "content_block_delta"] == SKELETON
    assert text_of(frames) == script_text(60)
    assert stack.redis.hget(message_keys(message_id).status, "worker").startswith("w2-")


def test_message_that_cannot_resume_ends_error_not_processing(make_stack):
    """With no resumes allowed, a message whose worker died ends with a well-formed error."""
    stack, api = _start(make_stack, SLUICE_MAX_RESUMES="0")
    message_id, watcher = _running(stack, api, 400, 5)
    os.kill(_worker_pid(stack, message_id), signal.SIGKILL)
    frames = watcher.wait(90)
    check_grammar(frames)
    assert [f.event for f in frames[-2:]] == ["content_block_stop", "error"]
    final = status_of(api, message_id)
    assert final["status"] == "error" and "worker was lost" in final["error_message"]


def test_embedded_model_resumes_from_the_text_already_produced(make_stack):
    """On the embedded model a resumed run continues the text; no second message_start."""
    stack, api = _start(make_stack, SLUICE_MODELS_FILE="")
    essay = "Write a very long essay about the history of the ocean."
    message_id, watcher = _running(stack, api, 120, 20, seed=7, temperature=0, text=essay)
    before = text_of(watcher.frames)
    os.kill(_worker_pid(stack, message_id), signal.SIGKILL)
    frames = watcher.wait(240)  # a loaded CI host runs the model slowly
    check_grammar(frames)
    kinds = [f.event for f in frames]
    assert kinds.count("message_start") == 1 and kinds[-1] == "message_stop"
    assert text_of(frames).startswith(before) and len(text_of(frames)) > len(before)
    assert stack.redis.hget(message_keys(message_id).status, "resumes") == "1"


def test_cancel_while_the_worker_is_dead_ends_cancelled(make_stack):
    """A cancel asked for while no run is alive wins when the message is picked up again."""
    stack, api = _start(make_stack, SLUICE_MAX_RESUMES="0")
    message_id, watcher = _running(stack, api, 400, 5)
    os.kill(_worker_pid(stack, message_id), signal.SIGKILL)
    answer = httpx.post(f"{api}/v1/messages/async/{message_id}/cancel", timeout=10)
    assert answer.status_code == 200
    frames = watcher.wait(90)
    check_grammar(frames)
    assert [f.event for f in frames[-3:]] == ["content_block_stop", "message_delta", "message_stop"]
    assert frames[-2].data["delta"]["stop_reason"] == "cancelled"
    assert status_of(api, message_id)["status"] == "cancelled"
