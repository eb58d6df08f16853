"""What a resumed run needs to know of a stream a dead worker left behind."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from shared.streams.contract import StoredEvent
from shared.streams.reads import StreamReads


@dataclass(frozen=True)
class ResumeState:
    """The stream so far: started or not, the text produced, and the block that is open.

    ``resumable`` is False when the stream holds anything but text blocks (a thinking or
    tool_use block cannot be continued faithfully) or was trimmed by the event cap.
    """

    started: bool
    text: str = ""
    index: int = -1
    open_kind: str | None = None
    resumable: bool = True
    reason: str = ""


def stored_resume_state(client: redis.Redis, message_id: str) -> ResumeState:
    """The position of the message's stream as stored now (a replay through the stream runtime)."""
    return resume_state(StreamReads(client).replay(message_id))


def resume_state(events: Sequence[StoredEvent]) -> ResumeState:
    """Rebuild the generation's position from its stored events."""
    if not events:
        return ResumeState(started=False)
    if events[0].type != "message_start":
        return ResumeState(True, resumable=False, reason="the stream was trimmed by the event cap")
    text: list[str] = []
    index, open_kind = -1, None
    for event in events[1:]:
        data = json.loads(event.data)
        if event.type == "content_block_start":
            index, open_kind = data["index"], data["content_block"]["type"]
            if open_kind != "text":
                return ResumeState(True, resumable=False, reason=f"a {open_kind} block was being written")
        elif event.type == "content_block_delta" and data["delta"]["type"] == "text_delta":
            text.append(data["delta"]["text"])
        elif event.type == "content_block_stop":
            open_kind = None
    return ResumeState(True, "".join(text), index, open_kind)
