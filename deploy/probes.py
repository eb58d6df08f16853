"""Small probes the stack, the tests and the benchmarks share: free ports, waiting on a
condition, whether a port or an HTTP endpoint answers."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.request


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    """A port ``p`` such that ``p`` and ``p + 1`` are both free right now (e.g. for ``make run``'s
    two worker metrics servers), kept out of ``free_port``'s picks while it looks."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two adjacent free ports")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def port_open(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    """True when ``url`` answers 200."""
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200
