"""The OpenAPI document and a self-contained page that renders it (no CDN: works offline)."""

from __future__ import annotations

from pathlib import Path

from flask import Response, current_app, jsonify

PAGE = Path(__file__).with_name("docs.html")


def openapi_json() -> Response:
    """The OpenAPI document, built once per app from the route table and the schemas."""
    from api.openapi import build_openapi  # the route table imports this module

    document = current_app.extensions.get("sluice.openapi")
    if document is None:
        document = current_app.extensions["sluice.openapi"] = build_openapi()
    return jsonify(document)


def docs_page() -> Response:
    """A page that fetches ``/openapi.json`` and lists every operation, body and answer."""
    return Response(PAGE.read_text(), mimetype="text/html")
