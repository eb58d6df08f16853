"""API keys: who is calling, as a tenant id derived from the key's hash.

Auth is on when ``SLUICE_API_KEYS`` (comma-separated) or ``SLUICE_API_KEYS_FILE`` (one key
a line, ``#`` comments) names keys. Keys are kept only as SHA-256 digests and compared
with ``hmac.compare_digest``; they are never logged. A request carries its key as
``Authorization: Bearer <key>`` or ``x-api-key: <key>``. ``/health``, the API docs and the
observer page's static files (``/``, ``/ui/*``)
are always open; ``/ready`` and ``/metrics`` are open unless
``SLUICE_PROTECT_OPS_ENDPOINTS`` is true.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from flask import Flask, g, request

from api.errors import ApiError
from shared.keys import ANONYMOUS
from shared.settings import ApiSettings

ALWAYS_OPEN = frozenset({"/health", "/openapi.json", "/docs", "/"})
#: The observer page's own files: public, the page asks for the key and sends it itself.
OPEN_PREFIXES = ("/ui/",)
OPS_ENDPOINTS = frozenset({"/ready", "/metrics"})


class Unauthenticated(ApiError):
    """401 authentication_error: auth is on and the key is missing or wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(401, message, headers={"WWW-Authenticate": 'Bearer realm="sluice"'})


def digest(key: str) -> str:
    """The SHA-256 hex digest of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def _keys(raw: list[str]) -> set[str]:
    return {line.strip() for line in raw if line.strip() and not line.strip().startswith("#")}


def operator_digests(settings: ApiSettings) -> frozenset[str]:
    """Digests of the operator keys (``SLUICE_OPERATOR_API_KEYS``): keys like any other, that may
    also use the priorities reserved for operators."""
    return frozenset(digest(key) for key in _keys((settings.operator_api_keys or "").split(",")))


def key_digests(settings: ApiSettings) -> tuple[str, ...]:
    """Digests of the configured keys, operator keys included (empty: auth is off)."""
    raw: list[str] = (settings.api_keys or "").split(",")
    if settings.api_keys_file:
        raw += Path(settings.api_keys_file).read_text().splitlines()
    return tuple(sorted({digest(key) for key in _keys(raw)} | operator_digests(settings)))


def presented_key() -> str | None:
    """The key the request carries, from ``Authorization: Bearer`` or ``x-api-key``."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key", "").strip() or None


def tenant_of(key_digest: str) -> str:
    """The tenant id stored with a key's messages: a prefix of its digest (not the key)."""
    return key_digest[:32]


def current_tenant() -> str:
    """The tenant of the current request (``anonymous`` while auth is off)."""
    return str(g.get("tenant", ANONYMOUS))


def is_operator() -> bool:
    """True for an operator key, and for every request while auth is off (one tenant: the operator)."""
    return bool(g.get("operator", current_tenant() == ANONYMOUS))


def install_auth(app: Flask, settings: ApiSettings) -> None:
    """Check every request's key before its view runs, when keys are configured."""
    digests = key_digests(settings)
    if not digests:
        return
    operators = operator_digests(settings)
    open_paths = ALWAYS_OPEN if settings.protect_ops_endpoints else ALWAYS_OPEN | OPS_ENDPOINTS

    @app.before_request
    def _authenticate() -> None:
        if request.path in open_paths or request.path.startswith(OPEN_PREFIXES):
            return
        key = presented_key()
        if key is None:
            raise Unauthenticated("Missing API key: send Authorization: Bearer <key> or x-api-key.")
        wanted = digest(key)
        # Compare against every digest so the time taken does not reveal which one matched.
        matches = [hmac.compare_digest(wanted, known) for known in digests]
        if not any(matches):
            raise Unauthenticated("Invalid API key.")
        g.tenant = tenant_of(wanted)
        g.operator = wanted in operators
