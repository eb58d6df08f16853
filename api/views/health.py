"""Liveness and readiness."""

from __future__ import annotations

from flask import Response, jsonify

from api.services import services


def health() -> Response:
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


def ready() -> Response:
    """Readiness: Redis answers and at least one worker consumes."""
    svc = services()
    try:
        svc.redis.ping()
        workers = svc.store.live_workers()
        redis_ok = True
    except Exception:  # any Redis failure means not ready
        workers, redis_ok = [], False
    ready_now = redis_ok and bool(workers)
    response = jsonify({"ready": ready_now, "redis": redis_ok, "workers": workers})
    response.status_code = 200 if ready_now else 503
    return response
