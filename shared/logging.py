"""Structured logs for the API and the workers: one configure function, JSON lines by default.

Every line carries ``message_id`` and ``correlation_id`` (null outside a message's
work). They come from structlog's context variables, bound per request by the API
and per task by the workers; lines from the standard library (Celery, gunicorn,
``logging.getLogger(...)`` with ``extra=``) go through the same processors.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from shared.settings import SharedSettings

#: Keys that every log line has, null when unknown.
CONTEXT_KEYS = ("message_id", "correlation_id")


def _ensure_context_keys(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in CONTEXT_KEYS:
        event.setdefault(key, None)
    return event


def _add_component(component: str) -> structlog.types.Processor:
    def add(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("component", component)
        return event

    return add


class _SluiceHandler(logging.StreamHandler):
    """The handler ``configure_logging`` installs (so that it can find and replace it)."""


def configure_logging(settings: SharedSettings, component: str) -> None:
    """Route structlog and the standard library to one stderr handler for ``component``."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_component(component),
        _ensure_context_keys,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = _SluiceHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _SluiceHandler)]:
        root.removeHandler(old)  # configuring again replaces ours, and leaves others' handlers be
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    logging.captureWarnings(True)  # Python warnings (e.g. Celery's root-user warning) as log lines too


def bind_message(message_id: str | None, correlation_id: str | None) -> None:
    """Tag every following log line of this thread or greenlet with the message's ids."""
    structlog.contextvars.bind_contextvars(message_id=message_id, correlation_id=correlation_id or None)


def clear_message() -> None:
    """Forget the ids bound by ``bind_message``."""
    structlog.contextvars.clear_contextvars()
