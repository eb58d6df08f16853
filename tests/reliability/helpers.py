"""Helpers for the fault-injection tests."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.integration.helpers import TERMINAL
from tests.sse import Frame, parse_lines

#: What the ``default`` scripted model says in its first ``n`` tokens.
SCRIPT = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]


def script_text(n: int) -> str:
    """The exact text of ``n`` tokens of the ``default`` scripted model."""
    return "".join(SCRIPT[i % len(SCRIPT)] + " " for i in range(n))


def chat(max_tokens: int = 40, model: str = "default", text: str = "hi", **fields: Any) -> dict[str, Any]:
    """A small ChatBody."""
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}],
        **fields,
    }


def post(
    api: str, payload: dict[str, Any], headers: dict[str, str] | None = None, **params: str
) -> httpx.Response:
    """POST /v1/messages/async."""
    return httpx.post(f"{api}/v1/messages/async", json=payload, params=params, headers=headers, timeout=30)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll until ``predicate`` returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (httpx.HTTPError, OSError):
            last = None
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Watcher:
    """Reads a message's SSE stream on a thread, reconnecting with Last-Event-ID on drops."""

    def __init__(
        self,
        apis: list[str],
        message_id: str,
        headers: dict[str, str] | None = None,
        *,
        stall_seconds: float | None = None,
    ) -> None:
        self.apis = apis
        self.message_id = message_id
        self.headers = headers or {}
        #: Reconnect (with Last-Event-ID) after this long with only pings, as a cautious client
        #: would; ``stalls`` counts how often that happened.
        self.stall_seconds = stall_seconds
        self.stalls = 0
        self.frames: list[Frame] = []
        self.connections = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not self.done.is_set():
            api = self.apis[self.connections % len(self.apis)]
            headers = dict(self.headers)
            if self.frames:
                headers["Last-Event-ID"] = self.frames[-1].id
            self.connections += 1
            try:
                url = f"{api}/v1/messages/async/{self.message_id}/stream"
                with httpx.stream("GET", url, headers=headers, timeout=30) as response:
                    if response.status_code != 200:  # e.g. 503 while Redis fails over: retry
                        time.sleep(0.2)
                        continue
                    progress = time.monotonic()
                    for frame in parse_lines(response.iter_lines()):
                        if frame.event == "ping":
                            if self.stall_seconds and time.monotonic() - progress > self.stall_seconds:
                                self.stalls += 1
                                break
                            continue
                        progress = time.monotonic()
                        self.frames.append(frame)
                        if frame.event in TERMINAL:
                            self.done.set()
                            return
            except (httpx.HTTPError, OSError):
                time.sleep(0.2)

    def wait(self, timeout: float = 120) -> list[Frame]:
        """Every frame, once the terminal event arrived."""
        assert self.done.wait(timeout), f"no terminal event; got {[f.event for f in self.frames][-5:]}"
        return self.frames


def status_of(api: str, message_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """GET status as JSON."""
    response = httpx.get(f"{api}/v1/messages/async/{message_id}/status", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def rss_kb(pid: int) -> int:
    """Resident memory of a process and its children, in kB (from /proc)."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for each in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def queued_tasks(client: Any, queue: str = "sluice.local") -> int:
    """Tasks waiting in the broker: ``LLEN`` summed over every priority list of ``queue``."""
    lists = [key for key in client.scan_iter(f"{queue}*") if client.type(key) == "list"]
    return sum(int(client.llen(key)) for key in lists)


def stored_messages(client: Any) -> int:
    """How many message status hashes Redis holds."""
    return sum(1 for _ in client.scan_iter("sluice:msg:*:status"))
