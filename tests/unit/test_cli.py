"""The CLI's SSE parsing, resume loop, exit codes and terminal rendering, over httpx's MockTransport."""

from __future__ import annotations

import io
import re

import httpx
import pytest
from rich.console import Console

from cli.client import ApiError, Frame, SluiceClient, Unreachable, parse_sse
from cli.render import LiveView, PlainView, Stats
from cli.watch import EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, follow
from shared import events as ev

START = ev.message_start("m1", "model", 3)
TEXT = [ev.content_block_start(0, ev.text_block()), ev.text_delta(0, "Hel"), ev.text_delta(0, "lo\nworld")]
END = [ev.content_block_stop(0), ev.message_delta("end_turn", None, 2), ev.message_stop()]


def sse(events: list[dict], first: int = 1, tail: str = "") -> bytes:
    """SSE bytes for ``events`` with ids ``<n>-0`` from ``first``, plus ``tail`` (e.g. a cut-off frame)."""
    frames = [
        f"id: {first + i}-0\nevent: {e['type']}\ndata: {ev.encode(e)}\n\n" for i, e in enumerate(events)
    ]
    return ("".join(frames) + tail).encode()


class Recorder:
    """A view that records what it is told."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.reconnects: list[str] = []

    def feed(self, frame: Frame) -> None:
        self.frames.append(frame)

    def tick(self) -> None:
        pass

    def reconnecting(self, attempt: int, reason: str) -> None:
        self.reconnects.append(reason)


def client_for(handler) -> SluiceClient:
    return SluiceClient("http://sluice.test", transport=httpx.MockTransport(handler))


def test_parse_sse_drops_a_frame_cut_before_its_blank_line():
    """Only complete frames are dispatched; pings keep their name and have no id."""
    text = 'event: ping\ndata: {"type":"ping"}\n\n' + sse([START]).decode() + 'id: 2-0\nevent: x\ndata: {"ty'
    frames = list(parse_sse(text.split("\n")))
    assert [(f.id, f.event) for f in frames] == [(None, "ping"), ("1-0", "message_start")]


def test_follow_resumes_from_the_last_event_id():
    """A stream that ends early is reopened with Last-Event-ID; each event is seen once."""
    cursors: list[str | None] = []
    everything = [START, *TEXT, *END]

    def handler(request: httpx.Request) -> httpx.Response:
        cursors.append(request.headers.get("last-event-id"))
        if len(cursors) == 1:
            return httpx.Response(200, content=sse(everything[:3], tail="id: 4-0\ndata: {"))
        start = int(cursors[-1].split("-")[0]) + 1
        return httpx.Response(200, content=sse(everything[start - 1 :], first=start))

    view = Recorder()
    outcome = follow(client_for(handler), "m1", view)
    assert cursors == [None, "3-0"]
    assert [f.id for f in view.frames] == [f"{n}-0" for n in range(1, 8)]
    assert len(view.reconnects) == 1
    assert (outcome.status, outcome.stop_reason, outcome.exit_code) == ("completed", "end_turn", EXIT_OK)


@pytest.mark.parametrize(
    ("ending", "status", "code"),
    [
        ([ev.message_delta("cancelled", None, 1), ev.message_stop()], "cancelled", EXIT_CANCELLED),
        ([ev.error("overloaded_error", "model crashed")], "error", EXIT_ERROR),
    ],
)
def test_exit_code_reflects_the_ending(ending, status, code):
    """A cancelled stream exits 4, an error event exits 3."""
    view = Recorder()
    outcome = follow(client_for(lambda r: httpx.Response(200, content=sse([START, *ending]))), "m1", view)
    assert (outcome.status, outcome.exit_code) == (status, code)


def test_not_found_is_raised_without_retrying():
    """A 404 (deleted, unknown) ends at once with the API's message."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        body = {
            "type": "error",
            "error": {"type": "not_found_error", "message": "Stream with message_id m1 not found"},
        }
        return httpx.Response(404, json=body)

    with pytest.raises(ApiError, match="404 not_found_error: Stream with message_id m1 not found"):
        follow(client_for(handler), "m1", Recorder())
    assert len(calls) == 1


def test_gives_up_when_the_connection_stays_lost():
    """Once connected, with nothing delivered for ``reconnect_for`` seconds, follow raises ``Unreachable``."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(200, content=sse([START]))
        raise httpx.ConnectError("Connection refused")

    view = Recorder()
    # The retries come 0.25 s and 0.75 s after the loss: 0.6 s leaves the first one 0.35 s of
    # slack on a busy machine, and gives up at the second.
    with pytest.raises(Unreachable, match=re.escape("not regained within 0.6s")):
        follow(client_for(handler), "m1", view, reconnect_for=0.6)
    assert len(view.reconnects) >= 2


def test_first_connection_failing_is_reported_at_once():
    """An API that cannot be reached at all is an error straight away, not a reconnect loop."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    view = Recorder()
    with pytest.raises(Unreachable, match=re.escape("cannot reach http://sluice.test: Connection refused")):
        follow(client_for(handler), "m1", view)
    assert view.reconnects == []


def test_live_view_sets_thinking_apart_and_prints_whole_lines():
    """In a terminal, finished lines scroll out; thinking is marked and prefixed; tool calls are named."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=60, height=20, color_system=None)
    thinking = [
        ev.content_block_start(0, ev.thinking_block()),
        ev.thinking_delta(0, "hmm\nok"),
        ev.content_block_stop(0),
    ]
    tool = [
        ev.content_block_start(1, ev.tool_use_block("tu_1", "lookup")),
        ev.input_json_delta(1, '{"q": 1}'),
        ev.content_block_stop(1),
    ]
    text = [
        ev.content_block_start(2, ev.text_block()),
        ev.text_delta(2, "Hello\nworld"),
        ev.content_block_stop(2),
    ]
    with LiveView(console) as view:
        for n, event in enumerate([START, *thinking, *tool, *text]):
            view.feed(Frame(f"{n + 1}-0", event["type"], event))
    printed = out.getvalue()
    for expected in ("thinking", "│ hmm", "│ ok", "tool call lookup (tu_1)", '{"q": 1}', "Hello", "world"):
        assert expected in printed


def test_plain_view_writes_only_the_answer_to_stdout():
    """In a pipe, stdout gets the text; thinking and tool calls go to stderr."""
    out, err = io.StringIO(), io.StringIO()
    thinking = [
        ev.content_block_start(0, ev.thinking_block()),
        ev.thinking_delta(0, "hmm"),
        ev.content_block_stop(0),
    ]
    text = [ev.content_block_start(1, ev.text_block()), ev.text_delta(1, "Hi"), ev.content_block_stop(1)]
    with PlainView(out, err) as view:
        for n, event in enumerate([START, *thinking, *text]):
            view.feed(Frame(f"{n + 1}-0", event["type"], event))
    assert out.getvalue() == "Hi\n"
    assert err.getvalue() == "[thinking] hmm\n"


def test_rate_is_measured_on_server_time():
    """Tokens/s comes from the event positions' timestamps, so a fast replay shows the real rate."""
    stats = Stats()
    for n, ms in enumerate([1000, 1100, 1200, 1300, 1400]):
        delta = ev.text_delta(0, "x")
        stats.feed(Frame(f"{ms}-{n}", delta["type"], delta))
    assert stats.rate() == pytest.approx(10.0)
