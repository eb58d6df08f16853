"""Following one message's stream to its end, resuming by itself after a dropped connection.

Exit codes of ``sluice watch`` and ``sluice chat`` (also in the README)::

    0  completed (any stop reason other than "cancelled")
    1  the API refused or could not be reached (one line on stderr)
    2  bad usage (click's own code)
    3  the generation ended with an error event (status "error")
    4  the message was cancelled
    130  interrupted (Ctrl-C); the generation goes on
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from cli.client import ApiError, Frame, SluiceClient, Unreachable
from shared import events as ev

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_ERROR = 3
EXIT_CANCELLED = 4
EXIT_INTERRUPTED = 130

#: Waits between reconnection attempts: 0.25 s, doubling, at most this.
MAX_BACKOFF_SECONDS = 5.0


@dataclass
class Outcome:
    """How a stream ended: its final status, stop reason, error, and output tokens."""

    status: str = "completed"
    stop_reason: str | None = None
    error: str | None = None
    output_tokens: int | None = None

    @property
    def exit_code(self) -> int:
        """The documented exit code for this ending."""
        return {"error": EXIT_ERROR, "cancelled": EXIT_CANCELLED}.get(self.status, EXIT_OK)

    def feed(self, frame: Frame) -> None:
        """Note what ``frame`` says about the ending."""
        if frame.event == "message_delta":
            self.stop_reason = frame.data.get("delta", {}).get("stop_reason")
            self.output_tokens = frame.data.get("usage", {}).get("output_tokens")
            if self.stop_reason == "cancelled":
                self.status = "cancelled"
        elif frame.event == "error":
            self.status = "error"
            error = frame.data.get("error", {})
            self.error = f"{error.get('type', 'error')}: {error.get('message', '')}"


class View(Protocol):
    """What a renderer of a followed stream gets told."""

    def feed(self, frame: Frame) -> None:
        """One stored event (never a ping)."""

    def tick(self) -> None:
        """A ping: nothing new, time to refresh the status line."""

    def reconnecting(self, attempt: int, reason: str) -> None:
        """The connection dropped; attempt ``attempt`` to resume starts after a short wait."""


def follow(
    client: SluiceClient,
    message_id: str,
    view: View,
    *,
    after: str | None = None,
    reconnect_for: float = 60.0,
    read_timeout: float = 60.0,
) -> Outcome:
    """Feed ``view`` every event after ``after`` until the terminal one, resuming from the last id seen.

    A first connection that fails is reported at once (``Unreachable``); once connected, it gives
    up only when no connection delivers anything for ``reconnect_for`` seconds. An API refusal
    (404 deleted, 400 cursor) is raised at once, except 5xx answers, which are retried.
    """
    outcome = Outcome()
    last = after
    attempt = 0
    lost_since: float | None = None
    connected = False
    while True:
        try:
            with client.stream(message_id, last, read_timeout) as frames:
                connected = True
                for frame in frames:
                    attempt, lost_since = 0, None
                    if frame.event == "ping":
                        view.tick()
                        continue
                    if frame.id:
                        last = frame.id
                    outcome.feed(frame)
                    view.feed(frame)
                    if ev.is_terminal(frame.event):
                        return outcome
            reason = "the stream ended before its last event"
        except Unreachable as exc:
            if not connected:
                raise Unreachable(f"cannot reach {client.base_url}: {exc}") from None
            reason = str(exc)
        except ApiError as exc:
            if exc.status < 500 or not connected:
                raise
            reason = str(exc)
        now = time.monotonic()
        lost_since = lost_since or now
        if now - lost_since >= reconnect_for:
            raise Unreachable(f"connection lost and not regained within {reconnect_for:g}s ({reason})")
        attempt += 1
        view.reconnecting(attempt, reason)
        time.sleep(min(0.25 * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS))
