"""Gunicorn settings: gevent workers so one process holds many open SSE streams."""

from __future__ import annotations

import os
from typing import Any

from gunicorn import glogging

bind = f"{os.environ.get('SLUICE_HOST', '127.0.0.1')}:{os.environ.get('SLUICE_PORT', '8000')}"
worker_class = "gevent"
workers = int(os.environ.get("SLUICE_API_WORKERS", "1"))
worker_connections = int(os.environ.get("SLUICE_API_WORKER_CONNECTIONS", "2000"))
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
    from shared.settings import load_settings

    settings = load_settings()
    configure_logging(settings, "api")
    refusal = open_api_refusal(settings)
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
