"""Celery app, thin tasks, the generation loop and the providers.

Rule: `workers` imports `shared`, never `api`, never Flask.
The model is loaded once per worker process, after the fork, never at import.
"""
