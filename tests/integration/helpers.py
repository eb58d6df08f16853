"""HTTP helpers for integration tests against a live stack."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.sse import Frame, parse_lines

TERMINAL = {"message_stop", "error"}


def body(text: str = "Tell me a short story about a cat.", **fields: Any) -> dict[str, Any]:
    """A ChatBody with one user turn."""
    return {"model": "default", "messages": [{"role": "user", "content": text}], **fields}


def submit(api: str, payload: dict[str, Any], **params: str) -> str:
    """POST /v1/messages/async; returns the message id."""
    response = httpx.post(f"{api}/v1/messages/async", json=payload, params=params, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending"
    return str(response.json()["message_id"])


def observe(
    api: str,
    message_id: str,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    timeout: float = 120,
    on_frame: Callable[[Frame], None] | None = None,
) -> list[Frame]:
    """Every frame of the message's SSE stream until the response ends (pings dropped)."""
    frames: list[Frame] = []
    with httpx.stream(
        "GET", f"{api}/v1/messages/async/{message_id}/stream", headers=headers, params=params, timeout=timeout
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for frame in parse_lines(response.iter_lines()):
            if frame.event == "ping":
                continue
            frames.append(frame)
            if on_frame is not None:
                on_frame(frame)
    return frames


def status(api: str, message_id: str) -> dict[str, Any]:
    """GET .../status as JSON (asserting 200)."""
    response = httpx.get(f"{api}/v1/messages/async/{message_id}/status", timeout=10)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def wait_status(api: str, message_id: str, wanted: set[str], timeout: float = 60) -> dict[str, Any]:
    """Poll status until it is one of ``wanted``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = status(api, message_id)
        if current["status"] in wanted:
            return current
        time.sleep(0.05)
    raise AssertionError(f"{message_id} never reached {wanted}; last {current}")


def text_of(frames: list[Frame]) -> str:
    """The concatenated text deltas."""
    return "".join(
        f.data["delta"]["text"]
        for f in frames
        if f.event == "content_block_delta" and f.data["delta"]["type"] == "text_delta"
    )


def check_grammar(frames: list[Frame]) -> None:
    """One message_start first, blocks opened/closed in order, exactly one terminal event last."""
    kinds = [f.event for f in frames]
    assert kinds[0] == "message_start", kinds[:3]
    assert kinds[-1] in TERMINAL and sum(k in TERMINAL for k in kinds) == 1, kinds[-3:]
    assert all(f.data["type"] == f.event for f in frames)
    open_block = None
    for frame in frames[1:-1]:
        if frame.event == "content_block_start":
            assert open_block is None
            open_block = frame.data["index"]
        elif frame.event == "content_block_delta":
            assert frame.data["index"] == open_block
        elif frame.event == "content_block_stop":
            assert frame.data["index"] == open_block
            open_block = None
    assert open_block is None
    if kinds[-1] == "message_stop":
        assert kinds[-2] == "message_delta"
    ids = [f.id for f in frames]
    assert all(ids) and ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert len(set(ids)) == len(ids)
