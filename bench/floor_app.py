"""The framework floor for a submit: a bare Flask view that parses the JSON body and makes one
Redis write. Served by the same servers as Sluice in ``bench/floor.py``; builds at import, as a
WSGI entry point does."""

from __future__ import annotations

import json
import os
import secrets

import redis
from flask import Flask, Response, request

app = Flask("floor")
_client = redis.Redis.from_url(os.environ["SLUICE_REDIS_URL"])


@app.post("/v1/messages/async")
def submit() -> Response:
    """Parse the body, store it under a fresh id, answer the id."""
    body = request.get_json()
    message_id = "msg_" + secrets.token_urlsafe(18)
    _client.set(f"floor:{message_id}", json.dumps(body), ex=600)
    return Response(json.dumps({"message_id": message_id, "status": "pending"}), mimetype="application/json")
