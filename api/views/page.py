"""The observer page: ``/`` and its files under ``/ui/`` (from ``api/static/``; no build step).

Plain HTML, CSS and JS. Not under ``/static/``: Flask keeps that rule for the app's own
static folder, and it would win.
"""

from __future__ import annotations

from pathlib import Path

from flask import Response, send_from_directory

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

#: The page runs only its own script and talks only to this API: a stored key has nowhere to leak to.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def index() -> Response:
    """The observer page."""
    response = send_from_directory(STATIC_DIR, "index.html", max_age=0)
    response.headers.update(PAGE_HEADERS)
    return response


def static_file(filename: str) -> Response:
    """A file of the page (404 outside ``api/static/``)."""
    response = send_from_directory(STATIC_DIR, filename, max_age=0)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
