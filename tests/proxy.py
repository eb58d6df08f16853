"""A TCP proxy on loopback that can drop an SSE stream mid-response, to test resuming."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field

STREAM_MARKER = b"/stream"


@dataclass
class CutProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port``; the first ``cuts`` stream responses are reset
    after ``cut_after`` bytes (mid-frame, as a real network drop would be). ``requests`` holds the
    head of every request seen, so tests can read the headers a client sent."""

    target_port: int
    cut_after: int | None = None
    cuts: int = 1
    port: int = 0
    requests: list[str] = field(default_factory=list)
    cut_done: int = 0
    _listener: socket.socket | None = None
    _sockets: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CutProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self._listener = listener
        self.port = listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        if self._listener is not None:
            self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def stream_requests(self) -> list[str]:
        """Heads of the requests for an SSE stream, in order."""
        return [head for head in self.requests if STREAM_MARKER in head.split("\r\n")[0].encode()]

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
            state = {"budget": None}
            threading.Thread(target=self._requests, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, state), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, state: dict) -> None:
        """Client to server; a stream request arms the cut when cuts remain."""
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_WR)
                return
            head = data.split(b"\r\n\r\n", 1)[0]
            if head[:4] in (b"GET ", b"POST", b"DELE"):
                self.requests.append(head.decode("latin-1"))
                first_line = head.split(b"\r\n", 1)[0]
                with self._lock:
                    if (
                        STREAM_MARKER in first_line
                        and self.cut_after is not None
                        and self.cut_done < self.cuts
                    ):
                        self.cut_done += 1
                        state["budget"] = self.cut_after
            try:
                upstream.sendall(data)
            except OSError:
                return

    def _responses(self, upstream: socket.socket, client: socket.socket, state: dict) -> None:
        """Server to client, resetting both sides once an armed budget is spent."""
        while True:
            try:
                data = upstream.recv(65536)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_WR)
                return
            budget = state["budget"]
            if budget is not None and len(data) >= budget:
                with contextlib.suppress(OSError):
                    client.sendall(data[:budget])
                self._reset(client)
                self._reset(upstream)
                return
            if budget is not None:
                state["budget"] = budget - len(data)
            try:
                client.sendall(data)
            except OSError:
                return

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        """Close with RST, like a dropped network path (not a polite FIN).

        ``shutdown(SHUT_RD)`` first: it wakes the other pump blocked in ``recv`` on this socket
        (a bare ``close`` would not, and the connection would stay open), and sends nothing.
        """
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RD)
        with contextlib.suppress(OSError):
            sock.close()
