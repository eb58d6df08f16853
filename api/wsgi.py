"""The WSGI entry point for gunicorn: the only module that builds the app at import."""

from __future__ import annotations

from api.app import create_app

app = create_app()
