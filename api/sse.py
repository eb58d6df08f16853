"""Server-Sent Events: the frames of what the stream runtime yields (``shared/streams``), and a
non-blocking writer to the client socket the runtime's tail can push batches to."""

from __future__ import annotations

import os
import select
import socket
import ssl
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from shared import events as ev
from shared.streams.contract import Batch, Chunk, StoredEvent, Tick

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}
PING_FRAME = b'event: ping\ndata: {"type":"ping"}\n\n'
#: Sent (unstored, without an id) to an observer whose message was deleted, before the end.
GONE_FRAME = (
    b"event: error\n"
    b'data: {"type":"error","error":{"type":"not_found_error","message":"This message was deleted."}}\n\n'
)


@lru_cache(maxsize=4096)
def frame(event: StoredEvent) -> bytes:
    """One stored event as an SSE frame; its data is sent exactly as stored.

    Cached: the observers of one stream share the tail's event objects, so each frame is
    encoded once per process, not once per observer."""
    return f"id: {event.id}\nevent: {event.type}\ndata: {event.data}\n\n".encode()


def frames(events: Iterator[StoredEvent] | tuple[StoredEvent, ...] | list[StoredEvent]) -> bytes:
    """The SSE frames of ``events``, in one piece."""
    return b"".join(map(frame, events))


class SocketPusher:
    """Writes a batch's frames straight to the client socket of a gunicorn async worker.

    The stream runtime's tail calls ``push`` for every caught-up observer, so it must never block: the
    socket is non-blocking (gevent), a batch that does not fit is kept in ``pending`` for the
    observer's own response iterator to ``flush``. The body framing is gunicorn's for HTTP/1.x:
    chunked for HTTP/1.1, raw bytes for HTTP/1.0 (Sluice runs gunicorn with its default HTTP
    protocol, never ``uwsgi``).
    """

    def __init__(self, sock: socket.socket, *, chunked: bool) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._framing = "chunked" if chunked else "raw"
        self.last: str | None = None
        self.ended = False
        self.pending = b""

    @classmethod
    def for_environ(cls, environ: dict[str, Any]) -> SocketPusher | None:
        """A pusher for this request's connection, or None where writing to it directly is not safe."""
        sock = environ.get("gunicorn.socket")
        protocol = environ.get("SERVER_PROTOCOL")
        if (
            sock is None
            or isinstance(sock, ssl.SSLSocket)
            or environ.get("wsgi.url_scheme") != "http"
            or environ.get("REQUEST_METHOD") == "HEAD"
            or protocol not in ("HTTP/1.0", "HTTP/1.1")
        ):
            return None
        try:
            if os.get_blocking(sock.fileno()):  # a sync/threaded worker: a full socket would block the tail
                return None
        except (OSError, ValueError):
            return None
        return cls(sock, chunked=protocol == "HTTP/1.1")

    def push(self, batch: Batch) -> bool:
        """Write ``batch`` without blocking; False when some is left in ``pending`` or the write failed."""
        data = batch.payloads.get(self._framing)
        if data is None:
            raw = frames(batch.events)
            data = b"%X\r\n%s\r\n" % (len(raw), raw) if self._framing == "chunked" else raw
            batch.payloads[self._framing] = data
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:  # the client went away: its own iterator finds out on its next write
            return False
        self.last = batch.events[-1].id
        self.ended = batch.ended
        if sent == len(data):
            return True
        self.pending = data[sent:]
        return False

    def flush(self) -> None:
        """Write what ``push`` could not, blocking this observer only (gevent's ``sendall``)."""
        if self.pending:
            data, self.pending = self.pending, b""
            self._sock.sendall(data)


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
    chunks: Iterator[Chunk | Tick],
    on_close: Callable[[bool], None] | None = None,
    pusher: SocketPusher | None = None,
) -> Iterator[bytes]:
    """SSE bytes for ``chunks``: the frames of a chunk in one write, a ping per idle tick, and
    an unstored ``not_found_error`` event, then the end, when the message is deleted meanwhile.

    ``on_close(finished)`` runs when the response ends, with whether the terminal
    event was sent; a client that went away leaves ``finished`` False. With a ``pusher``,
    the headers go out first (the tail may write to the socket only after them), and what
    the pusher could not write goes out before the next chunk.
    """
    finished = False
    try:
        if pusher is not None:
            yield b""  # gunicorn sends the headers with the first item, even an empty one
        for chunk in chunks:
            if pusher is not None:
                pusher.flush()
            if chunk is Tick.PING:
                yield PING_FRAME
                continue
            if chunk is Tick.GONE:
                yield GONE_FRAME
                return
            if chunk is Tick.FLUSH or not chunk:
                continue
            yield frame(chunk[0]) if len(chunk) == 1 else frames(chunk)
            finished = ev.is_terminal(chunk[-1].type)
        if pusher is not None:
            pusher.flush()
            finished = finished or pusher.ended
    finally:
        if on_close is not None:
            on_close(finished)
