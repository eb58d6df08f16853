"""The Flask app factory."""

from __future__ import annotations

from flask import Flask

from api.auth import install_auth
from api.errors import register_error_handlers
from api.metrics import instrument
from api.routes import register_routes
from api.services import build_services
from shared.logging import configure_logging
from shared.settings import ApiSettings


def create_app(settings: ApiSettings | None = None) -> Flask:
    """Build the API for ``settings`` (default: read from the environment, once per process)."""
    settings = settings or ApiSettings.from_env()
    configure_logging(settings, "api")
    app = Flask("sluice")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["SLUICE_MAX_JSON_DEPTH"] = settings.max_json_depth
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["sluice"] = build_services(settings)
    install_auth(app, settings)
    register_routes(app)
    register_error_handlers(app)
    instrument(app)
    return app
