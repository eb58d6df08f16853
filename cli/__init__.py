"""The ``sluice`` command-line client: an HTTP client of the API, nothing more.

``cli`` imports neither ``api`` nor ``workers`` (import-linter keeps it so); it may use
``shared`` for the event vocabulary and the accumulator.
"""
