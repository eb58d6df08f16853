"""The provider interface: stream provider events for one validated request.

A provider is a generator. It yields ``Started`` first, then deltas
(``TextDelta``, ``ThinkingDelta``, ``ToolUseStart`` + ``ToolInputDelta``), and ends with
``Finished``. Consecutive deltas of one kind form one content block; a new kind, or a new
``ToolUseStart``, closes the open block and opens the next. The generation loop stops early by closing the
generator (``GeneratorExit`` at the provider's current ``yield``), which is how
cancellation reaches the model or the upstream connection at once.

Exceptions: ``ProviderError`` (and subclasses) mean the model or upstream
failed; anything else is a bug. Both end the stream with an ``error`` event.
"""

from __future__ import annotations

from collections.abc import Generator
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
