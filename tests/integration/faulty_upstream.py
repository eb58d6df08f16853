"""A real, misbehaving OpenAI-compatible HTTP server on loopback, for the failure tests.

``POST /<scenario>/v1/chat/completions`` plays one scenario; ``GET /<scenario>/log`` tells
how many requests it saw, when, and whether the client hung up. Scenarios:

- ``ok``: streams WORDS then ``[DONE]``.
- ``flaky``: 500 twice, then like ``ok``.
- ``ratelimit``: 429 with ``Retry-After: 1`` once, then like ``ok``.
- ``refuse400``: always 400 with an OpenAI error body.
- ``always500``: always 503.
- ``drop``: streams two words, then cuts the connection mid-stream.
- ``slowfirst``: headers at once, then nothing for 30 s.
- ``stall``: one word, then nothing for 30 s.
- ``endless``: a word every 50 ms until the client hangs up (recorded).
- ``agent``: reasoning, text, then a tool call in pieces, ``finish_reason: tool_calls``, usage.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WORDS = ["Hello", " from", " the", " faulty", " upstream", "."]
AGENT_REASONING = ["The user", " wants weather."]
AGENT_TEXT = "Checking."
AGENT_ARGUMENTS = ['{"city":', ' "Paris"}']


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[str, list[float]] = defaultdict(list)
        self.bodies: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.hangups: dict[str, int] = defaultdict(int)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    payload = {"model": "faulty", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(payload)}\n\n".encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:
        scenario = self.path.strip("/").split("/")[0]
        state = self.server.state
        with state.lock:
            body = json.dumps(
                {
                    "requests": state.requests[scenario],
                    "hangups": state.hangups[scenario],
                    "bodies": state.bodies[scenario],
                }
            ).encode()
        self._plain(200, body)

    def do_POST(self) -> None:
        scenario = self.path.strip("/").split("/")[0]
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        state = self.server.state
        with state.lock:
            state.requests[scenario].append(time.time())
            state.bodies[scenario].append(body)
            seen = len(state.requests[scenario])
        if scenario == "flaky" and seen <= 2:
            return self._plain(500, b'{"error": {"message": "warming up"}}')
        if scenario == "ratelimit" and seen == 1:
            return self._plain(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "1"})
        if scenario == "refuse400":
            return self._plain(400, b'{"error": {"message": "model does not exist"}}')
        if scenario == "always500":
            return self._plain(503, b"busy")
        self._start_stream()
        try:
            self._play(scenario)
        except OSError:  # the client hung up
            with state.lock:
                state.hangups[scenario] += 1

    def _plain(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _send(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _play(self, scenario: str) -> None:
        self._send(_chunk({"role": "assistant"}))
        if scenario == "slowfirst":
            time.sleep(30)
        if scenario == "drop":
            for word in WORDS[:2]:
                self._send(_chunk({"content": word}))
            self.close_connection = True
            return  # no terminating chunk: a cut stream
        if scenario == "stall":
            self._send(_chunk({"content": WORDS[0]}))
            time.sleep(30)
        if scenario == "endless":
            while True:
                self._send(_chunk({"content": " word"}))
                time.sleep(0.05)
        if scenario == "agent":
            return self._agent()
        for word in WORDS:
            self._send(_chunk({"content": word}))
        self._send(_chunk({}, "stop"))
        self._finish(6)

    def _agent(self) -> None:
        for piece in AGENT_REASONING:
            self._send(_chunk({"reasoning_content": piece}))
        self._send(_chunk({"content": AGENT_TEXT}))
        call = {
            "index": 0,
            "id": "call_7",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        }
        self._send(_chunk({"tool_calls": [call]}))
        for piece in AGENT_ARGUMENTS:
            self._send(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        self._send(_chunk({}, "tool_calls"))
        self._finish(9)

    def _finish(self, completion_tokens: int) -> None:
        usage = {"prompt_tokens": 4, "completion_tokens": completion_tokens}
        self._send(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        self._send(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class FaultyUpstream:
    """Runs the server on a free loopback port in a thread of the test process."""

    def __init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.state = _State()
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def base_url(self, scenario: str) -> str:
        """The OpenAI base URL that plays ``scenario``."""
        return f"http://127.0.0.1:{self.port}/{scenario}/v1"

    def log(self, scenario: str) -> dict[str, Any]:
        """Requests seen (timestamps), client hang-ups and request bodies for ``scenario``."""
        with self.server.state.lock:
            state = self.server.state
            return {
                "requests": list(state.requests[scenario]),
                "hangups": state.hangups[scenario],
                "bodies": list(state.bodies[scenario]),
            }

    def start(self) -> FaultyUpstream:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
