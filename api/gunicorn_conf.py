"""Gunicorn settings: gevent workers so one process holds many open SSE streams.

The master builds the API settings once, here: bind, processes and connections come from them,
and ``on_starting`` checks them (logs, the open-API refusal). Each worker's app reads its own
once more after the fork (``api/wsgi.py``), as any process does.
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn import glogging

from shared.settings import ApiSettings, SettingsError

try:
    api_settings = ApiSettings.from_env()
except SettingsError as exc:  # gunicorn would print a traceback; the message names every variable
    raise SystemExit(f"sluice: {exc}") from None

bind = f"{api_settings.host}:{api_settings.port}"
workers = api_settings.api_workers
worker_connections = api_settings.api_worker_connections
worker_class = "gevent"
# SSE responses live as long as a generation; gevent workers are never "stuck" on one.
timeout = 0
graceful_timeout = 5
keepalive = 5
accesslog = None


def child_exit(server: object, worker: Any) -> None:
    """Drop a dead worker's live gauges (open SSE connections) from the multiprocess metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker: object) -> None:
    """Move what the worker built at start (modules, the app) out of the collector's way.

    Without this every full collection walks the whole import graph: 30-80 ms pauses in one
    gevent process, which every SSE observer of that process waits out. ``gc.freeze``
    (Python's advice for forked servers) keeps those objects out of later collections.
    """
    import gc

    gc.collect()
    gc.freeze()


def on_starting(server: object) -> None:
    """The master logs structured lines too (workers configure theirs in the app factory), and
    exits before binding when the address is public and no key is set (``api.exposure``)."""
    from api.exposure import open_api_refusal
    from shared.logging import configure_logging

    configure_logging(api_settings, "api")
    refusal = open_api_refusal(api_settings)
    if refusal:
        raise SystemExit(f"sluice: {refusal}")


class _PropagatingLogger(glogging.Logger):
    """Gunicorn's logger without its own handlers: its lines reach the structured root handler."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        self.error_log.propagate = True


logger_class = _PropagatingLogger
