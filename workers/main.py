"""Entry point for ``celery -A workers.main worker``: the only module that builds the app at import."""

from __future__ import annotations

from shared.settings import SettingsError, WorkerSettings
from workers.celery_app import create_celery

try:
    #: The worker's settings, read once in its main process; prefork children inherit them.
    settings = WorkerSettings.from_env()
except SettingsError as exc:  # Celery would print a traceback; the message names every variable
    raise SystemExit(f"sluice: {exc}") from None

app = create_celery(settings)
