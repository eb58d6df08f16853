"""The provider interface: stream provider events for one validated request.

A provider is a generator. It yields ``Started`` first, then deltas
(``TextDelta``, ``ThinkingDelta``, ``ToolUseStart`` + ``ToolInputDelta``), and ends with
``Finished``. Consecutive deltas of one kind form one content block; a new kind, or a new
``ToolUseStart``, closes the open block and opens the next. The generation loop stops early by closing the
generator (``GeneratorExit`` at the provider's current ``yield``), which is how
cancellation reaches the model or the upstream connection at once.

Exceptions: ``ProviderError`` (and subclasses) mean the model or upstream
failed; anything else is a bug. Both end the stream with an ``error`` event.
``Cancelled`` is raised by a provider that waits (for a first token, a retry, a slot)
and finds, through ``check_cancelled``, that its message was cancelled meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Started:
    """The prompt is in: how many tokens it took, and the model that really runs."""

    input_tokens: int
    model: str


@dataclass(frozen=True)
class TextDelta:
    """More generated text, and how many tokens it took."""

    text: str
    tokens: int = 1


@dataclass(frozen=True)
class ThinkingDelta:
    """More reasoning text (a ``thinking`` block); ``signature`` closes the block when given."""

    thinking: str
    tokens: int = 1
    signature: str | None = None


@dataclass(frozen=True)
class ToolUseStart:
    """A tool call begins: opens a ``tool_use`` block."""

    id: str
    name: str


@dataclass(frozen=True)
class ToolInputDelta:
    """More of the open tool call's input JSON."""

    partial_json: str
    tokens: int = 1


@dataclass(frozen=True)
class Finished:
    """Generation ended by itself: ``end_turn``, ``max_tokens``, ``tool_use``, ``refusal``.

    ``output_tokens`` is the provider's own count (upstream usage) when it has one;
    otherwise the loop's count of delta tokens stands. ``input_tokens`` corrects the
    prompt count of ``Started`` when the upstream reports it only at the end.
    """

    stop_reason: str
    output_tokens: int | None = None
    input_tokens: int | None = None


ProviderEvent = Started | TextDelta | ThinkingDelta | ToolUseStart | ToolInputDelta | Finished
ProviderStream = Generator[ProviderEvent, None, None]


class ProviderError(Exception):
    """The model or upstream failed; ``error_type`` is the Anthropic error type to report."""

    error_type = "api_error"


class Provider(Protocol):
    """What the generation loop needs from a model."""

    def stream(self, request: dict[str, Any], max_tokens: int) -> ProviderStream:
        """Generate for a validated, normalised ChatBody."""
        ...


@dataclass(frozen=True)
class Resume:
    """Where a resumed generation picks up: the text already produced and its token count."""

    text: str
    tokens: int


class ResumableProvider(Provider, Protocol):
    """A provider that can continue a generation a dead worker left half done.

    ``resume_stream`` yields ``Started`` and then only the deltas that come after
    ``resume.text`` (fed to the model as the assistant turn's prefix); ``max_tokens`` is
    the whole message's budget, of which ``resume.tokens`` are spent.
    """

    def resume_stream(self, request: dict[str, Any], max_tokens: int, resume: Resume) -> ProviderStream:
        """Continue a generation after ``resume.text``."""
        ...


class Cancelled(Exception):
    """The message was cancelled or deleted while a provider waited (before or between tokens)."""


#: Set by the generation loop for the run in progress: answers whether it should stop.
_cancel_probe: ContextVar[Callable[[], bool] | None] = ContextVar("sluice_cancel_probe", default=None)

#: How often a waiting provider asks whether its message was cancelled.
CANCEL_POLL_SECONDS = 0.1


def set_cancel_probe(probe: Callable[[], bool] | None) -> Token[Callable[[], bool] | None]:
    """Install the probe a waiting provider calls (the loop does this around a run)."""
    return _cancel_probe.set(probe)


def reset_cancel_probe(token: Token[Callable[[], bool] | None]) -> None:
    """Remove the probe installed by ``set_cancel_probe``."""
    _cancel_probe.reset(token)


def check_cancelled() -> None:
    """Raise ``Cancelled`` when the run in progress should stop."""
    probe = _cancel_probe.get()
    if probe is not None and probe():
        raise Cancelled


def wait_cancellable(seconds: float, ready: Callable[[float], bool] | None = None) -> bool:
    """Wait up to ``seconds`` (or until ``ready(slice)`` is true), checking for a cancel
    every ``CANCEL_POLL_SECONDS``; returns whether ``ready`` became true."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        step = min(left, CANCEL_POLL_SECONDS)
        if ready is not None:
            if ready(step):
                return True
        else:
            time.sleep(step)
        check_cancelled()
