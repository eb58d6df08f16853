"""Server-Sent Events: replay a message's stream from a cursor, then tail it live."""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from api.hub import Hub
from shared import events as ev
from shared.store import StoredEvent

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}
PING_FRAME = b'event: ping\ndata: {"type":"ping"}\n\n'


@lru_cache(maxsize=4096)
def frame(event: StoredEvent) -> bytes:
    """One stored event as an SSE frame; its data is sent exactly as stored.

    Cached: the observers of one stream share the hub's event objects, so each frame is
    encoded once per process, not once per observer."""
    return f"id: {event.id}\nevent: {event.type}\ndata: {event.data}\n\n".encode()


def follow(hub: Hub, message_id: str, after: str, *, idle_seconds: float) -> Iterator[StoredEvent | None]:
    """Stored events after ``after``, then live ones, ending after the terminal event.

    Yields ``None`` each time ``idle_seconds`` pass with nothing new (time for a ping);
    ends early if the message is deleted or expires meanwhile. Live events come from the
    process's fan-out hub (one Redis tail per stream), not from a blocked read per observer.
    """
    return hub.follow(message_id, after, idle_seconds=idle_seconds)


def follow_chunks(
    hub: Hub, message_id: str, after: str, *, idle_seconds: float
) -> Iterator[list[StoredEvent] | None]:
    """``follow`` in chunks: the events ready at once come together, to be written in one send."""
    return hub.follow_chunks(message_id, after, idle_seconds=idle_seconds)


def client_gone(environ: dict[str, Any]) -> bool:
    """True when the HTTP client has closed its connection (checked without blocking)."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def sse_body(
    chunks: Iterator[list[StoredEvent] | None], on_close: Callable[[bool], None] | None = None
) -> Iterator[bytes]:
    """SSE bytes for ``chunks``: the frames of a chunk in one write, a ping per idle tick.

    ``on_close(finished)`` runs when the response ends, with whether the terminal
    event was sent; a client that went away leaves ``finished`` False.
    """
    finished = False
    try:
        for chunk in chunks:
            if chunk is None:
                yield PING_FRAME
                continue
            yield frame(chunk[0]) if len(chunk) == 1 else b"".join(map(frame, chunk))
            finished = ev.is_terminal(chunk[-1].type)
    finally:
        if on_close is not None:
            on_close(finished)
