"""A reader that stops reading never stalls the producer or the other readers."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest

from tests.integration.helpers import check_grammar
from tests.reliability.helpers import Watcher, chat, post, status_of, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _stalled_reader(api: str, message_id: str) -> socket.socket:
    """Open the SSE stream with a tiny receive buffer and never read from it."""
    parts = urlsplit(api)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    request = f"GET /v1/messages/async/{message_id}/stream HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n"
    sock.sendall(request.encode())
    return sock


def test_stalled_reader_does_not_hold_back_producer_or_others(make_stack):
    """With a reader that never reads a multi-megabyte stream, generation and a second reader finish."""
    stack = make_stack()
    stack.worker("w1")
    api = stack.start_api()
    stack.stack.wait_ready(api)
    message_id = post(api, chat(max_tokens=4000, model="wordy")).json()["message_id"]
    stalled = [_stalled_reader(api, message_id) for _ in range(3)]
    try:
        frames = Watcher([api], message_id).wait(120)
        check_grammar(frames)
        assert sum(len(f.raw_data) for f in frames) > 2_000_000  # far more than the socket buffers
        wait_until(lambda: status_of(api, message_id)["status"] == "completed", 60, "the producer")
        other = post(api, chat(max_tokens=5, model="fast")).json()["message_id"]
        assert Watcher([api], other).wait(60)[-1].event == "message_stop"
    finally:
        for sock in stalled:
            sock.close()
