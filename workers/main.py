"""Entry point for ``celery -A workers.main worker``: the only module that builds the app at import."""

from __future__ import annotations

from shared.settings import WorkerSettings
from workers.celery_app import create_celery

#: The worker's settings, read once in its main process; prefork children inherit them.
app = create_celery(WorkerSettings.from_env())
