"""Gunicorn settings: gevent workers so one process holds many open SSE streams."""

from __future__ import annotations

import os
from typing import Any

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
