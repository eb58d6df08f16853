"""The stream's edge cases across real processes: resume after the end, delete while observed,
an id created anew, and a chunked body over the limit — on gunicorn, with a real worker.

The stacks ping only every 30 s, so an observer that is left waiting (the old behaviour) would
hang far past every deadline here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.helpers import check_grammar
from tests.reliability.helpers import Watcher, chat, post, status_of, wait_until
from tests.sse import Frame, parse_lines

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUIET = {"SLUICE_PING_INTERVAL_SECONDS": "30"}


class RawObserver:
    """Reads one SSE response on a thread (no reconnect), recording frames and when it ended."""

    def __init__(self, api: str, message_id: str) -> None:
        self.url = f"{api}/v1/messages/async/{message_id}/stream"
        self.frames: list[Frame] = []
        self.ended_at = 0.0
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=60) as response:
                for frame in parse_lines(response.iter_lines()):
                    if frame.event != "ping":
                        self.frames.append(frame)
        finally:
            self.ended_at = time.monotonic()
            self.done.set()

    def deltas(self) -> int:
        return sum(frame.event == "content_block_delta" for frame in self.frames)


def finished(api: str, model: str) -> tuple[str, list[Frame]]:
    """A message of ``model`` run to its end, and its frames."""
    message_id = post(api, chat(model=model, max_tokens=8)).json()["message_id"]
    return message_id, Watcher([api], message_id).wait(60)


@pytest.mark.parametrize("model", ["fast", "failing"])
def test_resuming_at_the_terminal_event_gets_an_empty_body_at_once(make_stack, model):
    """A cursor at message_stop (or at a terminal error) answers 200 with an empty body that ends,
    by header and by query."""
    stack = make_stack(**QUIET)
    stack.worker("w1")
    api = stack.start_api()
    message_id, frames = finished(api, model)
    assert frames[-1].event == ("message_stop" if model == "fast" else "error")
    url = f"{api}/v1/messages/async/{message_id}/stream"
    for kwargs in ({"headers": {"Last-Event-ID": frames[-1].id}}, {"params": {"after": frames[-1].id}}):
        began = time.monotonic()
        response = httpx.get(url, timeout=10, **kwargs)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.content == b""
        assert time.monotonic() - began < 10
    # One before the end still gets exactly the last event.
    response = httpx.get(url, headers={"Last-Event-ID": frames[-2].id}, timeout=10)
    assert [f.event for f in parse_lines(response.text.splitlines())] == [frames[-1].event]


def test_delete_ends_every_observer_on_every_api_process_within_a_second(make_stack):
    """Observers on two API processes get an unstored not_found_error and their responses end,
    well within a second of the delete (pings are 30 s apart here)."""
    stack = make_stack(**QUIET)
    stack.worker("w1")
    apis = [stack.start_api(), stack.start_api()]
    message_id = post(apis[0], chat(max_tokens=2000)).json()["message_id"]
    observers = [RawObserver(api, message_id) for api in apis for _ in range(2)]
    wait_until(lambda: all(o.deltas() >= 3 for o in observers), 60, "deltas at every observer")
    deleted_at = time.monotonic()
    answer = httpx.delete(f"{apis[1]}/v1/messages/async/{message_id}", timeout=10)
    assert answer.status_code == 200 and answer.json() == {"message_id": message_id, "deleted": True}
    for observer in observers:
        assert observer.done.wait(20), "observer still attached after delete"
        last = observer.frames[-1]
        assert last.event == "error" and last.id is None
        assert last.data["error"]["type"] == "not_found_error"
        assert observer.ended_at - deleted_at < 1.0
        assert all(frame.event != "message_stop" for frame in observer.frames)
    for api in apis:
        assert httpx.get(f"{api}/v1/messages/async/{message_id}/stream", timeout=10).status_code == 404


def test_an_id_deleted_and_created_anew_never_reaches_the_first_observer(make_stack):
    """The first observer ends with not_found_error and sees none of the new message's events;
    a new observer sees only the new message."""
    stack = make_stack(**QUIET)
    stack.worker("w1")
    apis = [stack.start_api(), stack.start_api()]
    assert post(apis[0], chat(max_tokens=2000), message_id="order-42").status_code == 200
    first = RawObserver(apis[1], "order-42")
    wait_until(lambda: first.deltas() >= 2, 60, "deltas")
    assert httpx.delete(f"{apis[0]}/v1/messages/async/order-42", timeout=10).status_code == 200
    assert post(apis[0], chat(model="fast", max_tokens=8), message_id="order-42").status_code == 200
    assert first.done.wait(20)
    assert first.frames[-1].data["error"]["type"] == "not_found_error"
    assert not any("alpha" in frame.raw_data for frame in first.frames)
    again = Watcher([apis[1]], "order-42").wait(60)
    check_grammar(again)
    assert "alpha" in "".join(frame.raw_data for frame in again)
    assert "one" not in "".join(frame.raw_data for frame in again)
    assert status_of(apis[0], "order-42")["status"] == "completed"


def test_a_chunked_body_over_the_limit_is_413_on_gunicorn(make_stack):
    """Transfer-Encoding: chunked over SLUICE_MAX_BODY_BYTES answers 413 request_too_large, like a
    body with Content-Length, and stores nothing."""
    stack = make_stack(SLUICE_MAX_BODY_BYTES="20000")
    api = stack.start_api()

    def pieces() -> Iterator[bytes]:
        yield b'{"model": "fast", "max_tokens": 8, "system": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'", "messages": [{"role": "user", "content": "hi"}]}'

    response = httpx.post(
        f"{api}/v1/messages/async",
        content=pieces(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"] == "request_too_large"
    assert not list(stack.redis.scan_iter("sluice:msg:*"))
