"""Liveness and readiness."""

from __future__ import annotations

from flask import Response, jsonify

from api.services import services


def health() -> Response:
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


def ready() -> Response:
    """Readiness: Redis answers (in Redis Cluster mode, every primary of the message store's
    cluster too) and at least one worker consumes."""
    svc = services()
    try:
        svc.redis.ping()
        if svc.store.messages is not svc.redis:
            svc.store.messages.ping(target_nodes=svc.store.messages.PRIMARIES)
        workers = svc.store.live_workers()
        redis_ok = True
    except Exception:  # any Redis failure means not ready
        workers, redis_ok = [], False
    ready_now = redis_ok and bool(workers)
    response = jsonify({"ready": ready_now, "redis": redis_ok, "workers": workers})
    response.status_code = 200 if ready_now else 503
    return response
