"""HTTP only: app factory, one view module per resource, SSE, errors.

Rule: `api` imports `shared`, never `workers`: tasks are sent by name.
Nothing connects at import; `api/wsgi.py` alone builds the app, for gunicorn.
"""
