"""An API process killed mid-SSE: the client resumes on another one with Last-Event-ID, losing nothing."""

from __future__ import annotations

import signal

import pytest

from tests.integration.helpers import check_grammar, text_of
from tests.reliability.helpers import Watcher, chat, post, script_text, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_client_resumes_on_a_second_api_after_the_first_is_killed(make_stack):
    """Frames seen across the kill equal a full replay: same ids, same data, none twice, none missing."""
    stack = make_stack()
    stack.worker("w1")
    first = stack.start_api()
    second = stack.start_api()
    stack.stack.wait_ready(first)
    message_id = post(first, chat(max_tokens=80)).json()["message_id"]
    watcher = Watcher([first, second], message_id)
    wait_until(lambda: len(watcher.frames) >= 12, 60, "some frames from the first API")
    victim = next(p for p in stack.stack.processes if p.name == f"api-{first.rsplit(':', 1)[1]}")
    victim.signal(signal.SIGKILL)
    frames = watcher.wait(120)
    assert watcher.connections >= 2
    check_grammar(frames)
    assert text_of(frames) == script_text(80)
    replay = Watcher([second], message_id).wait(60)
    assert [(f.id, f.raw_data) for f in frames] == [(f.id, f.raw_data) for f in replay]
