"""A TCP relay that delays every chunk by a fixed time in each direction (``netem delay`` in
user space): ``python -m tests.distributed.relay <listen host:port> <target host:port> <ms>``.

Each direction of each connection has a reader that timestamps what it receives and a sender
that forwards it once its time has come, so the delay adds to latency without capping
throughput, and order is kept."""

from __future__ import annotations

import collections
import contextlib
import socket
import sys
import threading
import time


def _pump(source: socket.socket, sink: socket.socket, delay: float) -> None:
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    ready = threading.Condition()

    def send() -> None:
        while True:
            with ready:
                while not queue:
                    ready.wait()
                due, chunk = queue.popleft()
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if not chunk:
                _close(sink, socket.SHUT_WR)
                return
            try:
                sink.sendall(chunk)
            except OSError:
                _close(source, socket.SHUT_RDWR)
                return

    threading.Thread(target=send, daemon=True).start()
    while True:
        try:
            chunk = source.recv(65536)
        except OSError:
            chunk = b""
        with ready:
            queue.append((time.monotonic() + delay, chunk))
            ready.notify()
        if not chunk:
            return


def _close(sock: socket.socket, how: int) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(how)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    """Relay ``argv[1]`` to ``argv[2]`` with ``argv[3]`` ms of delay each way."""
    listen, target, delay = _address(sys.argv[1]), _address(sys.argv[2]), float(sys.argv[3]) / 1000
    server = socket.create_server(listen, reuse_port=False)
    while True:
        client, _ = server.accept()
        try:
            upstream = socket.create_connection(target)
        except OSError:
            client.close()
            continue
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        threading.Thread(target=_pump, args=(client, upstream, delay), daemon=True).start()
        threading.Thread(target=_pump, args=(upstream, client, delay), daemon=True).start()


if __name__ == "__main__":
    main()
