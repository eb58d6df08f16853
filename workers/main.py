"""Entry point for ``celery -A workers.main worker``: the only module that builds the app at import."""

from __future__ import annotations

from shared.settings import load_settings
from workers.celery_app import create_celery

app = create_celery(load_settings())
