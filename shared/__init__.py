"""What the API and the workers both use: settings, schemas, events, Redis keys, stores.

Rule: `shared` imports neither `api` nor `workers`, and never Flask.
Both sides import from here; nothing here connects to anything at import time.
"""
