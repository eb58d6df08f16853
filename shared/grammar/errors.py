"""The grammar package's errors: what the API turns into 400s naming the keyword.

``GrammarError`` (a schema the grammar cannot express or enforce)
└── ``SchemaTooCostly`` (a schema over a configured cost cap)
"""

from __future__ import annotations

#: A path inside a schema: object keys and list indices.
SchemaPath = tuple[str | int, ...]


class GrammarError(ValueError):
    """This JSON Schema cannot be turned into a grammar that enforces it; ``path`` points inside it."""

    def __init__(self, message: str, path: SchemaPath = ()) -> None:
        super().__init__(message)
        self.path = path


class SchemaTooCostly(GrammarError):
    """A schema over one of the configured caps (repetition, properties, depth, grammar size)."""
