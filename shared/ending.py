"""The well-formed ending of a stream, built in one place.

Every stream that ends begins with ``message_start`` and ends with exactly one terminal event
(API.md). Whoever ends a message early — the API cancelling a pending one, the generation loop
seeing a cancel or failing, a worker resuming a message it cannot finish — describes what the
stream already holds (``StreamSoFar``) and how it ends (``Ending``); ``ending_events`` returns
the events to append: the ``message_start`` if there is none yet, events produced but not yet
written, the close of the open content block, then ``message_delta`` (``cancelled``) and
``message_stop``, or the ``error`` event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from shared import events as ev

#: The stop reason of a cancelled message.
CANCELLED_STOP_REASON = "cancelled"


class EndKind(Enum):
    """How a message ends early."""

    CANCELLED = "cancelled"
    ERROR = "error"


@dataclass(frozen=True)
class Ending:
    """How a stream ends: cancelled, or an error of ``error_type`` with ``message``."""

    kind: EndKind
    error_type: str = ""
    message: str = ""

    @classmethod
    def cancelled(cls) -> Ending:
        """A cancel asked for by the client."""
        return cls(EndKind.CANCELLED)

    @classmethod
    def error(cls, error_type: str, message: str) -> Ending:
        """A failure, shown as Anthropic's ``error`` event."""
        return cls(EndKind.ERROR, error_type, message)


@dataclass(frozen=True)
class StreamSoFar:
    """What a stream holds when it is ended early, as far as its ending is concerned.

    ``message_id``, ``model`` and ``input_tokens`` fill the ``message_start`` a stream without
    one (``started`` False) gets; ``open_block`` is the index of the content block left open
    (None: none); ``held`` are events produced but not yet written, kept before the close."""

    message_id: str
    model: str
    started: bool
    open_block: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    held: Sequence[ev.Event] = ()


def ending_events(so_far: StreamSoFar, end: Ending) -> list[ev.Event]:
    """The events that end ``so_far`` well-formed, the way ``end`` says."""
    events: list[ev.Event] = []
    if not so_far.started:
        events.append(ev.message_start(so_far.message_id, so_far.model, so_far.input_tokens))
    events.extend(so_far.held)
    if so_far.open_block is not None:
        events.append(ev.content_block_stop(so_far.open_block))
    if end.kind is EndKind.CANCELLED:
        events.append(ev.message_delta(CANCELLED_STOP_REASON, None, so_far.output_tokens))
        events.append(ev.message_stop())
    else:
        events.append(ev.error(end.error_type, end.message))
    return events
