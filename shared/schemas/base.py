"""Building blocks of every request schema: strict objects, strict numbers, tagged unions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate


class StrictSchema(Schema):
    """Refuses unknown fields, so a typo never passes silently."""

    class Meta:
        unknown = RAISE


class Number(fields.Float):
    """A JSON number (int or float), never a boolean or a numeric string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError("Not a valid number.")
        return super()._deserialize(value, attr, data, **kwargs)


class Int(fields.Integer):
    """A JSON integer, never a boolean, a float or a numeric string."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Not a valid integer.")
        return super()._deserialize(value, attr, data, **kwargs)


class Str(fields.String):
    """A JSON string, never a number coerced to one."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str):
            raise ValidationError("Not a valid string.")
        return super()._deserialize(value, attr, data, **kwargs)


class Bool(fields.Boolean):
    """A JSON boolean: true or false only."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, bool):
            raise ValidationError("Not a valid boolean.")
        return value


class Object(fields.Dict):
    """Any JSON object (its keys are strings by JSON's own rules)."""


class AnyJson(fields.Raw):
    """Any JSON value, including null."""


def one_of(*choices: str) -> validate.OneOf:
    """A ``OneOf`` whose message lists the choices."""
    return validate.OneOf(choices, error="Must be one of: {choices}.")


class Tagged(fields.Field):
    """An object whose ``type`` picks its schema from ``schemas``."""

    def __init__(self, schemas: Mapping[str, type[Schema]], what: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.schemas = schemas
        self.what = what

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValidationError(f"A {self.what} must be an object.")
        kind = value.get("type")
        schema = self.schemas.get(kind) if isinstance(kind, str) else None
        if schema is None:
            known = ", ".join(sorted(self.schemas))
            raise ValidationError({"type": [f"Unknown {self.what} type {kind!r}; expected one of: {known}."]})
        return schema().load(value)
