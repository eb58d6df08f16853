"""The generation loop: provider events in, Anthropic events out to a sink.

A plain function, testable without Celery or Redis: give it a provider and a
sink (``MessageStore`` bound to one message in production, a list in tests).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shared import events as ev
from shared.store import CANCELLED, COMPLETED, ERROR, FieldValues
from workers.providers.base import (
    Finished,
    Provider,
    ProviderError,
    ProviderStream,
    Started,
    TextDelta,
)
from workers.stops import StopScanner

GO_ON, CANCEL_ASKED, GONE = 0, 1, -1


class EventSink(Protocol):
    """Where a generation writes: ``append`` answers GO_ON, CANCEL_ASKED or GONE."""

    def append(self, events: Sequence[ev.Event], fields: FieldValues | None = None) -> int: ...

    def finish(
        self, status: str, events: Sequence[ev.Event], fields: FieldValues | None = None
    ) -> str | None: ...


@dataclass
class Outcome:
    """How a generation ended."""

    status: str
    stop_reason: str | None = None
    output_tokens: int = 0
    input_tokens: int = 0
    ttft_ms: float | None = None
    duration_s: float = 0.0
    error_message: str | None = None


@dataclass
class _Run:
    message_id: str
    sink: EventSink
    started_at: float
    input_tokens: int = 0
    output_tokens: int = 0
    open_block: int | None = None
    ttft_ms: float | None = None

    def emit(self, events: list[ev.Event], fields: FieldValues | None = None) -> int:
        return self.sink.append(events, fields) if events or fields else GO_ON

    def text(self, text: str, tokens: int) -> list[ev.Event]:
        self.output_tokens += tokens
        if not text:
            return []
        events: list[ev.Event] = []
        if self.open_block is None:
            self.open_block = 0
            events.append(ev.content_block_start(0, ev.text_block()))
        events.append(ev.text_delta(self.open_block, text))
        return events

    def close_block(self) -> list[ev.Event]:
        if self.open_block is None:
            return []
        index, self.open_block = self.open_block, None
        return [ev.content_block_stop(index)]

    def stats(self) -> dict[str, str | int | float]:
        elapsed = time.monotonic() - self.started_at
        fields: dict[str, str | int | float] = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "duration_ms": round(elapsed * 1000, 1),
        }
        if self.ttft_ms is not None and self.output_tokens:
            generating = max(elapsed - self.ttft_ms / 1000, 1e-6)
            fields["tokens_per_second"] = round(self.output_tokens / generating, 1)
        return fields


def run_generation(
    message_id: str,
    request: dict[str, Any],
    provider: Provider,
    sink: EventSink,
    *,
    max_tokens: int,
) -> Outcome:
    """Run one generation to its end, writing every event to ``sink``."""
    run = _Run(message_id, sink, time.monotonic())
    stream = provider.stream(request, max_tokens)
    scanner = StopScanner(request.get("stop_sequences"))
    try:
        return _drive(run, stream, scanner, request)
    except Exception as exc:  # any failure ends the stream well-formed, never silently
        stream.close()
        message = str(exc) or type(exc).__name__
        error_type = exc.error_type if isinstance(exc, ProviderError) else "api_error"
        sink.finish(ERROR, [ev.error(error_type, message)], {"error_message": message, **run.stats()})
        return Outcome(
            ERROR,
            None,
            run.output_tokens,
            run.input_tokens,
            run.ttft_ms,
            time.monotonic() - run.started_at,
            message,
        )
    finally:
        stream.close()


def _drive(run: _Run, stream: ProviderStream, scanner: StopScanner, request: dict[str, Any]) -> Outcome:
    started = next(stream)
    if not isinstance(started, Started):
        raise ProviderError(f"provider began with {type(started).__name__}, not Started")
    run.input_tokens = started.input_tokens
    signal = run.emit(
        [ev.message_start(run.message_id, started.model, started.input_tokens)],
        {"input_tokens": started.input_tokens, "model_ran": started.model},
    )
    stop_reason, stop_sequence = "end_turn", None
    for item in stream if signal == GO_ON else ():
        if isinstance(item, TextDelta):
            events = run.text(scanner.feed(item.text), item.tokens)
            fields: dict[str, str | int | float] = {}
            if run.ttft_ms is None and events:
                run.ttft_ms = round((time.monotonic() - run.started_at) * 1000, 1)
                fields["ttft_ms"] = run.ttft_ms
            if scanner.matched is not None:
                stop_reason, stop_sequence = "stop_sequence", scanner.matched
                run.emit(events, fields)
                break
            signal = run.emit(events, fields)
            if signal != GO_ON:
                break
        elif isinstance(item, Finished):
            stop_reason = item.stop_reason
            break
    stream.close()
    if signal == GONE:
        return Outcome(
            "deleted",
            None,
            run.output_tokens,
            run.input_tokens,
            run.ttft_ms,
            time.monotonic() - run.started_at,
        )
    if signal == CANCEL_ASKED:
        ending = ev.cancelled_ending(run.open_block, run.output_tokens)
        status = run.sink.finish(CANCELLED, ending, run.stats())
        return Outcome(
            status or CANCELLED,
            "cancelled",
            run.output_tokens,
            run.input_tokens,
            run.ttft_ms,
            time.monotonic() - run.started_at,
        )
    tail = run.text(scanner.flush(), 0) if stop_sequence is None else []
    ending = [
        *tail,
        *run.close_block(),
        ev.message_delta(stop_reason, stop_sequence, run.output_tokens),
        ev.message_stop(),
    ]
    status = run.sink.finish(COMPLETED, ending, {"stop_reason": stop_reason, **run.stats()})
    return Outcome(
        status or COMPLETED,
        stop_reason,
        run.output_tokens,
        run.input_tokens,
        run.ttft_ms,
        time.monotonic() - run.started_at,
    )
