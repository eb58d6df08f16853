"""Renderers of a followed stream: live terminal, plain text for pipes, raw JSON events."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from cli.client import Frame
from cli.watch import Outcome

STYLES = {"text": "", "thinking": "dim italic", "tool_use": "cyan"}
STATUS_STYLES = {"completed": "green", "cancelled": "yellow", "error": "red"}


def position_seconds(event_id: str | None) -> float | None:
    """Server time of a stream position (a Redis stream id is ``<ms>-<seq>``), in seconds."""
    head = (event_id or "").partition("-")[0]
    return int(head) / 1000 if head.isdigit() else None


class Stats:
    """Live counting for the status line: deltas as tokens, rate since the first one.

    Times come from the events' positions (server time), so replaying a finished stream
    shows the rate it was generated at, not the speed of the replay.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.first_delta: float | None = None
        self.last_delta: float | None = None
        self.deltas = 0
        self.phase = "waiting"

    def feed(self, frame: Frame) -> None:
        """Count ``frame``."""
        if frame.event == "message_start":
            self.phase = "generating"
        elif frame.event == "content_block_delta":
            now = position_seconds(frame.id) or time.monotonic()
            self.first_delta = self.first_delta or now
            self.last_delta = now
            self.deltas += 1

    def rate(self) -> float | None:
        """Deltas per second since the first delta (a delta is about one token)."""
        if self.first_delta is None or self.last_delta is None or self.last_delta <= self.first_delta:
            return None
        return (self.deltas - 1) / (self.last_delta - self.first_delta)

    def line(self, note: str = "") -> Text:
        """The status line: phase, tokens, tokens/s, elapsed."""
        parts = [f"● {self.phase}", f"{self.deltas} tokens"]
        rate = self.rate()
        if rate is not None:
            parts.append(f"{rate:.1f} tok/s")
        parts.append(f"{time.monotonic() - self.started:.1f} s")
        text = Text(" · ".join(parts), style="bold blue")
        if note:
            text.append(f"  {note}", style="yellow")
        return text


def summary(message_id: str, outcome: Outcome, status: dict[str, Any] | None, stats: Stats) -> Text:
    """The final line: status, stop reason, tokens, tokens/s, time to first token, queue wait."""
    meta = (status or {}).get("metadata") or {}
    parts = [f"{message_id} {outcome.status}"]
    if outcome.stop_reason:
        parts.append(outcome.stop_reason)
    tokens = meta.get("output_tokens", outcome.output_tokens)
    if tokens is not None:
        parts.append(f"{tokens} tokens")
    rate = meta.get("tokens_per_second", stats.rate())
    if rate is not None:
        parts.append(f"{float(rate):.1f} tok/s")
    if meta.get("ttft_ms") is not None:
        parts.append(f"ttft {float(meta['ttft_ms']):.0f} ms")
    if meta.get("queue_wait_ms") is not None:
        parts.append(f"queue {float(meta['queue_wait_ms']):.0f} ms")
    text = Text(" · ".join(parts), style=STATUS_STYLES.get(outcome.status, ""))
    if outcome.error:
        text.append(f"\n{outcome.error}", style="red")
    return text


class LiveView:
    """A terminal: finished lines scroll above, the line being written and the status line stay live."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.stats = Stats()
        self.kind = "text"
        self.partial = ""
        self.tool: dict[str, Any] = {}
        self.note = ""
        self.live = Live(self._renderable(), console=console, refresh_per_second=10, transient=True)

    def __enter__(self) -> LiveView:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._flush()
        self.live.stop()

    def _renderable(self) -> Group:
        return Group(Text(self.partial, style=STYLES[self.kind]), self.stats.line(self.note))

    def _refresh(self) -> None:
        self.live.update(self._renderable())

    def _print(self, line: str) -> None:
        prefix = "│ " if self.kind == "thinking" else ""
        self.live.console.print(Text(prefix + line, style=STYLES[self.kind]))

    def _flush(self) -> None:
        if self.partial:
            self._print(self.partial)
            self.partial = ""

    def _add(self, text: str) -> None:
        self.partial += text
        *done, self.partial = self.partial.split("\n")
        for line in done:
            self._print(line)
        # Keep the live part short enough to repaint: scroll long paragraphs out at a space.
        limit = max(self.console.width, 20) * max(self.console.height - 4, 2)
        if len(self.partial) > limit and " " in self.partial:
            head, _, self.partial = self.partial.rpartition(" ")
            self._print(head)

    def feed(self, frame: Frame) -> None:
        """Render one event."""
        self.note = ""
        self.stats.feed(frame)
        data = frame.data
        if frame.event == "content_block_start":
            block = data.get("content_block", {})
            self.kind = block.get("type") if block.get("type") in STYLES else "text"
            if self.kind == "thinking":
                self.live.console.print(Text("thinking", style="dim bold"))
            elif self.kind == "tool_use":
                self.tool = block
                self.live.console.print(
                    Text(f"⚙ tool call {block.get('name')} ({block.get('id')})", "cyan bold")
                )
        elif frame.event == "content_block_delta":
            delta = data.get("delta", {})
            self._add(delta.get("text") or delta.get("thinking") or delta.get("partial_json") or "")
        elif frame.event == "content_block_stop":
            self._flush()
            self.kind = "text"
        self._refresh()

    def tick(self) -> None:
        """Repaint the status line (elapsed time moves on)."""
        self._refresh()

    def reconnecting(self, attempt: int, reason: str) -> None:
        """Show that the stream is being resumed."""
        self.note = f"connection lost ({reason}); resuming, attempt {attempt}…"
        self._refresh()


class PlainView:
    """Pipes and files: the answer's text on stdout as it arrives; thinking, tool calls, notes on stderr."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.stats = Stats()
        self.kind = "text"
        self.ends_with_newline = True
        self.tool_input = ""
        self.tool: dict[str, Any] = {}

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.ends_with_newline:
            self.out.write("\n")
        self.out.flush()

    def feed(self, frame: Frame) -> None:
        """Write one event's part."""
        self.stats.feed(frame)
        data = frame.data
        if frame.event == "content_block_start":
            block = data.get("content_block", {})
            self.kind = str(block.get("type", "text"))
            if self.kind == "thinking":
                self.err.write("[thinking] ")
            elif self.kind == "tool_use":
                self.tool, self.tool_input = block, ""
        elif frame.event == "content_block_delta":
            delta = data.get("delta", {})
            if self.kind == "text" and "text" in delta:
                self.out.write(delta["text"])
                self.out.flush()
                if delta["text"]:
                    self.ends_with_newline = delta["text"].endswith("\n")
            elif self.kind == "thinking" and "thinking" in delta:
                self.err.write(delta["thinking"])
                self.err.flush()
            elif "partial_json" in delta:
                self.tool_input += delta["partial_json"]
        elif frame.event == "content_block_stop":
            if self.kind == "thinking":
                self.err.write("\n")
            elif self.kind == "tool_use":
                self.err.write(
                    f"[tool call {self.tool.get('name')} {self.tool.get('id')}] {self.tool_input}\n"
                )
            self.err.flush()
            self.kind = "text"

    def tick(self) -> None:
        """Nothing to repaint in a pipe."""

    def reconnecting(self, attempt: int, reason: str) -> None:
        """One note on stderr."""
        start = "" if self.ends_with_newline else "\n"
        self.err.write(f"{start}[connection lost ({reason}); resuming, attempt {attempt}]\n")
        self.err.flush()


class JsonView:
    """Scripts: one JSON object a line, ``{"id", "event", "data"}``, for every stored event."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.stats = Stats()

    def __enter__(self) -> JsonView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.out.flush()

    def feed(self, frame: Frame) -> None:
        """Print the event."""
        self.stats.feed(frame)
        line = {"id": frame.id, "event": frame.event, "data": frame.data}
        self.out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.out.flush()

    def tick(self) -> None:
        """Pings are not printed."""

    def reconnecting(self, attempt: int, reason: str) -> None:
        """A note on stderr; stdout stays pure JSON lines."""
        self.err.write(f"[connection lost ({reason}); resuming, attempt {attempt}]\n")
        self.err.flush()
