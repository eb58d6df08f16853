"""Every failure rendered in Anthropic's error envelope, by one set of handlers.

Exceptions::

    ApiError                 any error with a status and an Anthropic error type
    ├── NotFound             404 not_found_error (+ top-level "detail" the seed's clients read)
    ├── InvalidRequest       400 invalid_request_error, with optional [{loc, msg, type}]
    └── Overloaded           529 overloaded_error, with Retry-After

Redis unreachable, timing out, loading, or demoted to a replica mid-failover (READONLY) on any
route is a 503 ``api_error`` with ``Retry-After``, never a 500: the client retries (a stream
with ``Last-Event-ID``) once the primary is back or promoted.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared.schemas import BodyInvalid

log = logging.getLogger("sluice.api")

_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "api_error",
    529: "overloaded_error",
}


#: Seconds a client waits before retrying when Redis is unavailable (a Sentinel failover takes
#: a few seconds).
UNAVAILABLE_RETRY_AFTER_SECONDS = 1
#: Redis failures that mean "not now" rather than a bug.
REDIS_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError)


class ApiError(Exception):
    """An error answer: HTTP status, Anthropic error type, human message."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or _TYPES_BY_STATUS.get(status, "api_error")
        self.detail = detail
        self.headers = headers or {}


class NotFound(ApiError):
    """No such message (unknown, deleted, expired, or another tenant's)."""

    def __init__(self, message_id: str) -> None:
        text = f"Stream with message_id {message_id} not found"
        super().__init__(404, text, detail=text)


class InvalidRequest(ApiError):
    """400 with the path of each bad field."""

    def __init__(self, message: str, detail: list[dict[str, Any]] | None = None) -> None:
        super().__init__(400, message, detail=detail)


class Overloaded(ApiError):
    """529: the queue is over its depth limit."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(529, message, headers={"Retry-After": str(retry_after)})


def unavailable(message: str = "The message store is unavailable; try again.") -> ApiError:
    """503 with ``Retry-After``: Redis cannot answer now (down, loading, mid-failover)."""
    return ApiError(503, message, headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)})


def error_response(error: ApiError) -> Response:
    """The envelope for ``error``."""
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": error.error_type, "message": error.message},
    }
    if error.detail is not None:
        body["detail"] = error.detail
    response = jsonify(body)
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def register_error_handlers(app: Flask) -> None:
    """Route every exception through ``error_response``."""

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return error_response(error)

    @app.errorhandler(BodyInvalid)
    def _invalid(error: BodyInvalid) -> Response:
        return error_response(InvalidRequest(f"Invalid request body: {error}", error.details))

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(error: RequestEntityTooLarge) -> Response:
        limit = app.config.get("MAX_CONTENT_LENGTH")
        return error_response(
            ApiError(413, f"Request body is larger than {limit} bytes (SLUICE_MAX_BODY_BYTES).")
        )

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        status = error.code or 500
        kept = {k: v for k, v in error.get_headers() if k in ("Allow", "Retry-After", "WWW-Authenticate")}
        return error_response(ApiError(status, error.description or error.name, headers=kept))

    @app.errorhandler(redis.RedisError)
    def _redis(error: redis.RedisError) -> Response:
        if not isinstance(error, REDIS_UNAVAILABLE):
            return _bug(error)
        log.warning("redis unavailable: %s", error)
        return error_response(unavailable())

    @app.errorhandler(Exception)
    def _bug(error: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(ApiError(500, "Internal server error.", error_type="api_error"))
