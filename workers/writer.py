"""A sink whose appends go out on their own thread, so Redis round trips overlap generation,
and which coalesces text deltas on a timer.

The generation thread hands each batch of events over and goes straight back to the model
(llama.cpp releases the GIL while it computes the next token); the writer thread makes the
``append`` round trip meanwhile. Batches handed over while a write is in flight go out
together in the next one (events in order, status fields merged, later values winning), so a
fast producer never builds a backlog of round trips.

With a coalescing window, deltas are also held until the window since the first held one has
passed, then written as one merged delta per block. The timer runs in the writer thread, so a
held delta goes out on time even when the provider pauses. Never held: the first delta of a
message (the time to first token is untouched), block starts and stops, and anything the
loop waits for (an empty ``append``, ``finish``).

What the loop relies on stays true: events reach the stream in the order they were produced;
``append`` answers the newest signal a write returned (a cancel is seen one write later);
after a signal other than GO_ON nothing more is written; an empty ``append`` (the cancel
probe of a waiting provider) waits for the writes before it and answers from Redis; and
``finish`` waits until every handed-over event is stored, then ends the message. A failed
write is raised to the generation thread at its next ``append`` or ``finish``, which then
ends the message as an error, as when the write failed in that thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from shared import events as ev
from shared.store import FieldValues, Signal
from workers.generation import EventSink

#: Delta kinds that coalescing merges, and the field holding their text.
_MERGEABLE = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}


class BackgroundWriter:
    """Wraps a sink; ``append`` hands over, a writer thread writes. Use ``background_writer``."""

    def __init__(self, sink: EventSink, coalesce_seconds: float = 0.0) -> None:
        self._sink = sink
        self._window = coalesce_seconds
        self._cond = threading.Condition()
        self._events: list[ev.Event] = []
        self._fields: dict[str, str | int | float] = {}
        self._queued = False
        #: Whether everything queued is deltas that may wait for the window, and since when.
        self._holdable = True
        self._held_since = 0.0
        self._delta_written = False
        self._urgent = False
        self._writing = False
        self._stopped = False
        self._signal = Signal.GO_ON
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sluice-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def append(self, events: Sequence[ev.Event], fields: FieldValues | None = None) -> Signal:
        if not events and not fields:
            self._drain()
            signal = self._sink.append([], None)
            with self._cond:
                self._signal = signal if self._signal == Signal.GO_ON else self._signal
                return self._signal
        with self._cond:
            self._raise_failure()
            if self._signal != Signal.GO_ON:
                return self._signal
            was_holdable = self._queued and self._holdable
            if not self._queued:
                self._held_since = time.monotonic()
                self._holdable = True
            self._events.extend(events)
            self._fields.update(fields or {})
            self._holdable = self._holdable and all(e["type"] == "content_block_delta" for e in events)
            self._queued = True
            if not (was_holdable and self._holdable):  # a holding writer needs no wake-up
                self._cond.notify_all()
            return self._signal

    def finish(
        self, status: str, events: Sequence[ev.Event], fields: FieldValues | None = None
    ) -> str | None:
        self._drain()
        with self._cond:
            self._raise_failure()
        return self._sink.finish(status, events, fields)

    def stop(self) -> None:
        """Write what was handed over, then end the thread."""
        self._drain()
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()

    def _drain(self) -> None:
        with self._cond:
            self._urgent = True
            self._cond.notify_all()
            while self._queued or self._writing:
                self._cond.wait()
            self._urgent = False

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _hold_seconds(self) -> float:
        """How much longer the queued events may wait (<= 0: write now)."""
        if not (self._window and self._holdable and self._delta_written) or self._urgent or self._stopped:
            return 0.0
        return self._held_since + self._window - time.monotonic()

    def _take(self) -> tuple[list[ev.Event], dict[str, str | int | float]] | None:
        """Wait for something to write and its time; None when stopped with nothing left."""
        with self._cond:
            while True:
                if self._queued:
                    wait = self._hold_seconds()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                elif self._stopped:
                    return None
                else:
                    self._cond.wait()
            events, self._events = self._events, []
            fields, self._fields = self._fields, {}
            self._queued = False
            self._writing = True
        return (merge_deltas(events) if self._window else events), fields

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            events, fields = batch
            signal, failure = Signal.GO_ON, None
            try:
                signal = self._sink.append(events, fields)
            except Exception as exc:  # raised in the generation thread at its next call
                failure = exc
            with self._cond:
                self._writing = False
                self._delta_written = self._delta_written or any(
                    e["type"] == "content_block_delta" for e in events
                )
                if failure is not None:
                    self._failure = failure
                    self._signal = Signal.FAILED
                elif self._signal == Signal.GO_ON:
                    self._signal = signal
                if self._signal != Signal.GO_ON:
                    self._events, self._fields, self._queued = [], {}, False
                self._cond.notify_all()


@contextmanager
def background_writer(sink: EventSink, coalesce_seconds: float = 0.0) -> Iterator[BackgroundWriter]:
    """A started ``BackgroundWriter`` over ``sink``, stopped (its writes done) on exit."""
    writer = BackgroundWriter(sink, coalesce_seconds)
    writer.start()
    try:
        yield writer
    finally:
        writer.stop()


def merge_deltas(events: list[ev.Event]) -> list[ev.Event]:
    """Adjacent deltas of one block and kind merged into one event (the text is unchanged)."""
    merged: list[ev.Event] = []
    for event in events:
        prev = merged[-1] if merged else None
        kind = event.get("delta", {}).get("type") if event["type"] == "content_block_delta" else None
        if (
            kind in _MERGEABLE
            and prev is not None
            and prev["type"] == "content_block_delta"
            and prev["index"] == event["index"]
            and prev["delta"]["type"] == kind
        ):
            name = _MERGEABLE[kind]
            prev["delta"] = {**prev["delta"], name: prev["delta"][name] + event["delta"][name]}
        else:
            merged.append(event)
    return merged
