"""Writing SSE frames straight to a client socket: framing, a full socket, and when it is not used."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from api.sse import GONE_FRAME, PING_FRAME, SocketPusher, frame, frames, sse_body
from shared.records import StoredEvent
from shared.streams.contract import Batch, Tick


def event(number: int, kind: str = "content_block_delta", size: int = 10) -> StoredEvent:
    """A stored event with id ``<number>-0`` and ``size`` bytes of text."""
    return StoredEvent(f"{number}-0", kind, '{"text":"' + "x" * size + '"}')


def dechunk(raw: bytes) -> bytes:
    """The body of an HTTP/1.1 chunked transfer (no trailers)."""
    body = b""
    while raw:
        size_line, _, raw = raw.partition(b"\r\n")
        size = int(size_line, 16)
        body, raw = body + raw[:size], raw[size + 2 :]
    return body


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    server.setblocking(False)
    yield server, client
    server.close()
    client.close()


def read_all(sock: socket.socket, into: list[bytes]) -> None:
    """Read until the peer closes."""
    while data := sock.recv(65536):
        into.append(data)


def test_push_writes_one_http_chunk_per_batch(pair):
    """Over HTTP/1.1 a batch goes out as one chunk holding its frames; the pusher notes its last id."""
    server, client = pair
    pusher = SocketPusher(server, chunked=True)
    batch = Batch("0-0", (event(1), event(2)))
    assert pusher.push(batch)
    server.close()
    received: list[bytes] = []
    read_all(client, received)
    raw = b"".join(received)
    assert raw.startswith(b"%X\r\n" % len(frames(batch.events)))
    assert dechunk(raw) == frames(batch.events)
    assert pusher.last == "2-0" and not pusher.ended and pusher.pending == b""


def test_full_socket_keeps_the_rest_and_flush_writes_it(pair):
    """A batch larger than the socket takes is partly kept, and flush sends exactly the rest."""
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    pusher = SocketPusher(server, chunked=False)
    big = Batch("0-0", (event(1, size=2_000_000), event(2, "message_stop")))
    assert not pusher.push(big)
    assert pusher.pending and pusher.last == "2-0" and pusher.ended
    received: list[bytes] = []
    reader = threading.Thread(target=read_all, args=(client, received))
    reader.start()
    server.setblocking(True)  # a gevent socket's sendall waits like this, for this observer only
    pusher.flush()
    server.close()
    reader.join(10)
    assert b"".join(received) == frames(big.events)
    assert pusher.pending == b""


def test_push_to_a_closed_connection_fails_without_moving_on(pair):
    """A write to a client that went away reports failure and leaves the position where it was."""
    server, client = pair
    client.close()
    pusher = SocketPusher(server, chunked=False)
    assert not pusher.push(Batch("0-0", (event(1),)))
    assert pusher.last is None and pusher.pending == b""


def environ(sock: socket.socket | None, **extra: str) -> dict[str, object]:
    """A gunicorn-like WSGI environ for a plain HTTP/1.1 GET, with ``extra`` overrides."""
    return {
        "gunicorn.socket": sock,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "REQUEST_METHOD": "GET",
        **extra,
    }


def test_pusher_only_for_plain_http1_on_a_non_blocking_socket(pair):
    """Direct writes need gunicorn's HTTP/1.x framing and a socket that never blocks the tail."""
    server, _ = pair
    assert SocketPusher.for_environ(environ(server)) is not None
    assert SocketPusher.for_environ(environ(server, SERVER_PROTOCOL="HTTP/1.0")) is not None
    assert SocketPusher.for_environ(environ(server, SERVER_PROTOCOL="HTTP/2.0")) is None
    assert SocketPusher.for_environ(environ(server, REQUEST_METHOD="HEAD")) is None
    assert SocketPusher.for_environ(environ(server, **{"wsgi.url_scheme": "https"})) is None
    assert SocketPusher.for_environ(environ(None)) is None
    server.setblocking(True)
    assert SocketPusher.for_environ(environ(server)) is None


def test_sse_body_sends_headers_first_then_what_the_pusher_kept_before_the_next_chunk(pair):
    """With a pusher the body starts empty (headers), flushes the pusher's rest before a chunk, and
    counts a terminal event the tail wrote as finished."""
    server, client = pair
    client.settimeout(5)
    pusher = SocketPusher(server, chunked=False)
    closed: list[bool] = []

    def chunks() -> Iterator[list[StoredEvent] | Tick]:
        pusher.pending = b"rest of a batch"
        yield Tick.FLUSH
        yield [event(3)]
        pusher.ended = True

    body = sse_body(chunks(), closed.append, pusher)
    assert next(body) == b""
    assert next(body) == frame(event(3))
    assert client.recv(100) == b"rest of a batch"
    assert list(body) == []
    assert closed == [True]


def test_sse_body_ends_with_an_unstored_not_found_error_when_the_message_is_gone():
    """A GONE tick becomes an error event without an id (not_found_error), and the body ends."""
    closed: list[bool] = []

    def chunks() -> Iterator[list[StoredEvent] | Tick]:
        yield [event(1)]
        yield Tick.PING
        yield Tick.GONE
        yield [event(2)]  # never reached

    body = b"".join(sse_body(chunks(), closed.append))
    assert body == frame(event(1)) + PING_FRAME + GONE_FRAME
    assert b"id:" not in GONE_FRAME and b'"not_found_error"' in GONE_FRAME
    assert closed == [False]
