"""A sink whose appends go out on their own thread, so Redis round trips overlap generation.

The generation thread hands each batch of events over and goes straight back to the model
(llama.cpp releases the GIL while it computes the next token); the writer thread makes the
``append`` round trip meanwhile. Batches handed over while a write is in flight go out
together in the next one (events in order, status fields merged, later values winning), so a
fast producer never builds a backlog of round trips.

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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from shared import events as ev
from shared.store import FieldValues
from workers.generation import GO_ON, EventSink

#: The signal after a failed write: nothing more is handed over (the failure is raised instead).
_FAILED = -2


class BackgroundWriter:
    """Wraps a sink; ``append`` hands over, a writer thread writes. Use ``background_writer``."""

    def __init__(self, sink: EventSink) -> None:
        self._sink = sink
        self._cond = threading.Condition()
        self._events: list[ev.Event] = []
        self._fields: dict[str, str | int | float] = {}
        self._queued = False
        self._writing = False
        self._stopped = False
        self._signal = GO_ON
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sluice-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def append(self, events: Sequence[ev.Event], fields: FieldValues | None = None) -> int:
        if not events and not fields:
            self._drain()
            signal = self._sink.append([], None)
            with self._cond:
                self._signal = signal if self._signal == GO_ON else self._signal
                return self._signal
        with self._cond:
            self._raise_failure()
            if self._signal == GO_ON:
                self._events.extend(events)
                self._fields.update(fields or {})
                self._queued = True
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
            while self._queued or self._writing:
                self._cond.wait()

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queued and not self._stopped:
                    self._cond.wait()
                if not self._queued:
                    return
                events, self._events = self._events, []
                fields, self._fields = self._fields, {}
                self._queued = False
                self._writing = True
            signal, failure = GO_ON, None
            try:
                signal = self._sink.append(events, fields)
            except Exception as exc:  # raised in the generation thread at its next call
                failure = exc
            with self._cond:
                self._writing = False
                if failure is not None:
                    self._failure = failure
                    self._signal = _FAILED
                elif self._signal == GO_ON:
                    self._signal = signal
                if self._signal != GO_ON:
                    self._events, self._fields, self._queued = [], {}, False
                self._cond.notify_all()


@contextmanager
def background_writer(sink: EventSink) -> Iterator[BackgroundWriter]:
    """A started ``BackgroundWriter`` over ``sink``, stopped (its writes done) on exit."""
    writer = BackgroundWriter(sink)
    writer.start()
    try:
        yield writer
    finally:
        writer.stop()
