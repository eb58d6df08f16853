"""The generation loop: provider events in, Anthropic events out to a sink.

A plain function, testable without Celery or Redis: give it a provider and a
sink (``MessageStore`` bound to one message in production, a list in tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared import events as ev
from shared.ending import Ending, StreamSoFar, ending_events
from shared.store import CANCELLED, COMPLETED, ERROR, FieldValues, Signal
from workers.blocks import Blocks
from workers.providers.base import (
    Cancelled,
    Finished,
    Provider,
    ProviderError,
    ProviderEvent,
    ProviderStream,
    ResumableProvider,
    Resume,
    Started,
    TextDelta,
    ThinkingDelta,
    ToolInputDelta,
    ToolUseStart,
    reset_cancel_probe,
    set_cancel_probe,
)
from workers.stops import StopScanner


class SinkUnavailable(Exception):
    """The sink cannot be reached (Redis is down or restarting). The run is abandoned as if
    its worker had died: no error ending is attempted, the lease lapses, and the message is
    resumed from what was stored once the store is back."""


class EventSink(Protocol):
    """Where a generation writes: ``append`` answers a ``Signal`` (GO_ON, CANCEL_ASKED or GONE), and raises
    ``SinkUnavailable`` when the store cannot be reached."""

    def append(self, events: Sequence[ev.Event], fields: FieldValues | None = None) -> Signal: ...

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
    #: The text of the answer's text blocks (a continuing conversation's next prefix ends with it).
    text: str = ""


@dataclass
class _Run:
    message_id: str
    sink: EventSink
    scanner: StopScanner
    started_at: float = field(default_factory=time.monotonic)
    input_tokens: int = 0
    blocks: Blocks = field(default_factory=Blocks)
    ttft_ms: float | None = None
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    reported_tokens: int | None = None
    #: Whether the stream already has its message_start (written here, or by a run resumed).
    opened: bool = False
    #: The model named in message_start when the provider fails before saying which one runs.
    model_hint: str = "default"
    #: The provider's final prompt count, when it differs from what message_start said.
    late_input_tokens: dict[str, int] = field(default_factory=dict)
    #: A provider's own status fields for the run (``run_stats()``, e.g. prompt-cache reuse).
    provider_stats: Callable[[], dict[str, str | int | float]] | None = None

    @property
    def output_tokens(self) -> int:
        return self.reported_tokens if self.reported_tokens is not None else self.blocks.tokens

    def apply(self, item: ProviderEvent) -> bool:
        """Feed one provider event; True when generation is over."""
        if isinstance(item, TextDelta):
            self.blocks.text(self.scanner.feed(item.text), item.tokens)
            if self.scanner.matched is not None:
                self.stop_reason, self.stop_sequence = "stop_sequence", self.scanner.matched
                return True
        elif isinstance(item, ThinkingDelta):
            self.blocks.thinking(item)
        elif isinstance(item, ToolUseStart):
            self.blocks.tool_start(item)
        elif isinstance(item, ToolInputDelta):
            self.blocks.tool_input(item)
        elif isinstance(item, Finished):
            self.stop_reason = item.stop_reason
            self.reported_tokens = item.output_tokens
            if item.input_tokens is not None and item.input_tokens != self.input_tokens:
                self.input_tokens = item.input_tokens
                self.late_input_tokens = {"input_tokens": item.input_tokens}
            return True
        return False

    def flush(self) -> Signal:
        """Write what the last events produced; answers the sink's signal."""
        events = self.blocks.take()
        fields: dict[str, str | int | float] = {}
        if self.ttft_ms is None and any(e["type"] == "content_block_delta" for e in events):
            self.ttft_ms = round((time.monotonic() - self.started_at) * 1000, 1)
            fields["ttft_ms"] = self.ttft_ms
        if events:
            fields["output_tokens"] = self.output_tokens  # progress; a resumed run starts here
        return self.sink.append(events, fields) if events or fields else Signal.GO_ON

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
        if self.provider_stats is not None:
            fields.update(self.provider_stats())
        return fields

    def outcome(self, status: str, stop_reason: str | None, error: str | None = None) -> Outcome:
        return Outcome(
            status,
            stop_reason,
            self.output_tokens,
            self.input_tokens,
            self.ttft_ms,
            time.monotonic() - self.started_at,
            error,
            "".join(self.blocks.texts),
        )


def run_generation(
    message_id: str,
    request: dict[str, Any],
    provider: Provider,
    sink: EventSink,
    *,
    max_tokens: int,
) -> Outcome:
    """Run one generation to its end, writing every event to ``sink`` (``workers.writer``
    puts a writer thread, and the coalescing of deltas, between the loop and the store)."""
    run = _Run(message_id, sink, StopScanner(request.get("stop_sequences")))
    run.model_hint = str(request.get("model") or "default")
    run.provider_stats = getattr(provider, "run_stats", None)
    return _guarded(run, provider.stream(request, max_tokens), resumed=False)


def resume_generation(
    message_id: str,
    request: dict[str, Any],
    provider: ResumableProvider,
    sink: EventSink,
    *,
    max_tokens: int,
    resume: Resume,
    open_index: int,
    text_open: bool,
    ttft_ms: float | None = None,
) -> Outcome:
    """Continue a generation a dead worker left: no second ``message_start``; deltas go on
    in the open text block (``open_index``) or in the next block."""
    run = _Run(
        message_id,
        sink,
        StopScanner(request.get("stop_sequences")),
        ttft_ms=ttft_ms,
    )
    run.blocks = Blocks(index=open_index, kind="text" if text_open else None, tokens=resume.tokens)
    run.opened = True
    return _guarded(run, provider.resume_stream(request, max_tokens, resume), resumed=True)


def _guarded(run: _Run, stream: ProviderStream, *, resumed: bool) -> Outcome:
    sink = run.sink
    signal = [Signal.GO_ON]

    def probe() -> bool:
        """Polled by a provider while it waits: an empty append answers the cancel flag."""
        signal[0] = sink.append([], None)
        return signal[0] != Signal.GO_ON

    token = set_cancel_probe(probe)
    try:
        return _drive(run, stream, resumed)
    except Cancelled:
        stream.close()
        if signal[0] == Signal.GONE:
            return run.outcome("deleted", None)
        return _finish_cancelled(run)
    except SinkUnavailable:
        stream.close()
        raise
    except Exception as exc:  # any failure ends the stream well-formed, never silently
        stream.close()
        message = str(exc) or type(exc).__name__
        error_type = exc.error_type if isinstance(exc, ProviderError) else "api_error"
        sink.finish(
            ERROR,
            _failed_ending(run, error_type, message),
            {"error_message": message, **run.stats()},
        )
        return run.outcome(ERROR, None, message)
    finally:
        reset_cancel_probe(token)
        stream.close()


def _so_far(run: _Run, held: Sequence[ev.Event] = ()) -> StreamSoFar:
    """What the run's stream holds now, for its early ending."""
    open_block = run.blocks.index if run.blocks.kind is not None else None
    return StreamSoFar(
        run.message_id, run.model_hint, run.opened, open_block, run.input_tokens, run.output_tokens, held
    )


def _finish_cancelled(run: _Run) -> Outcome:
    """The well-formed cancelled ending, whatever the run had written so far."""
    run.blocks.take()  # nothing more reaches the stream after a cancel was seen
    ending = ending_events(_so_far(run), Ending.cancelled())
    status = run.sink.finish(CANCELLED, ending, run.stats())
    return run.outcome(status or CANCELLED, "cancelled")


def _failed_ending(run: _Run, error_type: str, message: str) -> list[ev.Event]:
    """The well-formed error ending: held deltas are written before the open block is closed."""
    so_far = _so_far(run, held=run.blocks.take())
    run.blocks.kind = None
    return ending_events(so_far, Ending.error(error_type, message))


def _drive(run: _Run, stream: ProviderStream, resumed: bool = False) -> Outcome:
    started = next(stream)
    if not isinstance(started, Started):
        raise ProviderError(f"provider began with {type(started).__name__}, not Started")
    run.input_tokens = started.input_tokens
    opening = [] if resumed else [ev.message_start(run.message_id, started.model, started.input_tokens)]
    signal = run.sink.append(opening, {"input_tokens": started.input_tokens, "model_ran": started.model})
    run.opened = True
    for item in stream if signal == Signal.GO_ON else ():
        done = run.apply(item)
        if done:
            break
        signal = run.flush()
        if signal != Signal.GO_ON:
            break
    stream.close()
    if signal == Signal.GONE:
        return run.outcome("deleted", None)
    if signal == Signal.CANCEL_ASKED:
        return _finish_cancelled(run)
    if run.stop_sequence is None:
        run.blocks.text(run.scanner.flush(), 0)
    run.blocks.close()
    ending = [
        *run.blocks.take(),
        ev.message_delta(run.stop_reason, run.stop_sequence, run.output_tokens, **run.late_input_tokens),
        ev.message_stop(),
    ]
    status = run.sink.finish(COMPLETED, ending, {"stop_reason": run.stop_reason, **run.stats()})
    return run.outcome(status or COMPLETED, run.stop_reason)
