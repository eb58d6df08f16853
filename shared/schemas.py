"""Marshmallow schemas for request bodies, and the one place validation errors get their shape.

Normalisation happens here, once: ``system`` becomes a list of text blocks,
``system``-role messages move into ``system``, string content becomes a list
of text blocks. Whatever passes ``load_chat_body`` is what workers read.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

MESSAGE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class StrictSchema(Schema):
    """Refuses unknown fields, so a typo never passes silently."""

    class Meta:
        unknown = RAISE


class TextBlockSchema(StrictSchema):
    type = fields.Constant("text", required=True)
    text = fields.String(required=True, validate=validate.Length(min=1))
    cache_control = fields.Dict(allow_none=True)
    citations = fields.List(fields.Dict(), allow_none=True)


BLOCK_SCHEMAS: dict[str, type[Schema]] = {"text": TextBlockSchema}


class Blocks(fields.Field):
    """A string (one text block) or a non-empty list of blocks tagged by ``type``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            if not value:
                raise ValidationError("Content must not be empty.")
            return [{"type": "text", "text": value}]
        if not isinstance(value, list):
            raise ValidationError("Content must be a string or a list of content blocks.")
        if not value:
            raise ValidationError("Content must not be empty.")
        errors: dict[int, Any] = {}
        blocks: list[dict[str, Any]] = []
        for index, item in enumerate(value):
            try:
                blocks.append(load_block(item))
            except ValidationError as exc:
                errors[index] = exc.messages
        if errors:
            raise ValidationError(errors)
        return blocks


def load_block(item: Any) -> dict[str, Any]:
    """One content block, by its ``type``."""
    if not isinstance(item, dict):
        raise ValidationError("Content block must be an object.")
    kind = item.get("type")
    schema = BLOCK_SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise ValidationError({"type": [f"Unknown or unsupported content block type {kind!r}."]})
    loaded: dict[str, Any] = schema().load(item)
    return loaded


class SystemField(fields.Field):
    """``system`` in every accepted form, normalised to a list of text blocks."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        blocks: list[dict[str, Any]] = []
        errors: dict[int, Any] = {}
        for index, item in enumerate(items):
            if isinstance(item, str):
                blocks.append({"type": "text", "text": item})
            elif isinstance(item, dict) and isinstance(item.get("text"), str):
                extra = set(item) - {"type", "text", "cache_control"}
                if item.get("type", "text") != "text" or extra:
                    errors[index] = ["A system entry is {type: 'text', text, cache_control?}."]
                else:
                    blocks.append({"type": "text", "text": item["text"]})
            else:
                errors[index] = ["A system entry is a string or an object with a 'text' string."]
        if errors:
            raise ValidationError(errors if isinstance(value, list) else errors[0])
        return blocks


class MessageSchema(StrictSchema):
    role = fields.String(required=True, validate=validate.OneOf(["user", "assistant", "system"]))
    content = Blocks(required=True)


class MetadataSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    user_id = fields.String(allow_none=True, validate=validate.Length(max=512))


class ChatBodySchema(StrictSchema):
    """The request body of ``/v1/messages`` and ``/v1/messages/async``."""

    model = fields.String(load_default="default", validate=validate.Length(min=1, max=256))
    messages = fields.List(fields.Nested(MessageSchema), required=True, validate=validate.Length(min=1))
    max_tokens = fields.Integer(strict=True, validate=validate.Range(min=1), allow_none=True)
    system = SystemField(allow_none=True, load_default=None)
    stream = fields.Boolean(load_default=False)
    temperature = fields.Float(allow_none=True, validate=validate.Range(min=0, max=1))
    top_p = fields.Float(allow_none=True, validate=validate.Range(min=0, max=1))
    top_k = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0))
    seed = fields.Integer(strict=True, allow_none=True)
    stop_sequences = fields.List(fields.String(validate=validate.Length(min=1)), allow_none=True)
    metadata = fields.Dict(allow_none=True)
    priority = fields.Integer(strict=True, allow_none=True)
    correlation_id = fields.String(allow_none=True, validate=validate.Length(max=256))

    @pre_load
    def _refuse_booleans_as_numbers(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ValidationError("The request body must be a JSON object.", "_schema")
        for name in ("max_tokens", "top_k", "seed", "priority", "temperature", "top_p"):
            if isinstance(data.get(name), bool):
                raise ValidationError({name: ["Not a valid number."]})
        return data

    @validates_schema
    def _check_metadata(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("metadata") is not None:
            MetadataSchema().load(data["metadata"])

    @post_load
    def _normalise(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        system = list(data.get("system") or [])
        messages = []
        for message in data["messages"]:
            if message["role"] == "system":
                system.extend(message["content"])
            else:
                messages.append(message)
        data["system"] = system
        data["messages"] = messages
        return data

    @validates_schema
    def _check_turns(self, data: dict[str, Any], **kwargs: Any) -> None:
        messages = data.get("messages") or []
        if messages and all(m.get("role") == "system" for m in messages):
            raise ValidationError("At least one user message is required.", "messages")


def error_details(messages: Any, loc: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """Flatten Marshmallow's nested error dict into ``[{loc, msg, type}]``."""
    details: list[dict[str, Any]] = []
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            sub = loc if key == "_schema" else (*loc, key)
            details.extend(error_details(value, sub))
    elif isinstance(messages, list):
        for item in messages:
            details.extend(error_details(item, loc))
    else:
        text = str(messages)
        details.append({"loc": list(loc), "msg": text, "type": _error_type(text)})
    return details


def _error_type(text: str) -> str:
    lowered = text.lower()
    if "unknown field" in lowered:
        return "extra_forbidden"
    if "missing" in lowered or "required" in lowered:
        return "missing"
    if "not a valid" in lowered or "must be" in lowered:
        return "type_error"
    return "value_error"


class BodyInvalid(Exception):
    """A body failed validation; ``details`` is the ``[{loc, msg, type}]`` list."""

    def __init__(self, details: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in details))
        self.details = details


def load_chat_body(payload: Any, known_models: Collection[str]) -> dict[str, Any]:
    """Validate and normalise a ChatBody; raise ``BodyInvalid`` listing every problem."""
    try:
        body: dict[str, Any] = ChatBodySchema().load(payload)
    except ValidationError as exc:
        raise BodyInvalid(error_details(exc.messages)) from None
    if body["model"] not in known_models:
        raise BodyInvalid(
            [
                {
                    "loc": ["model"],
                    "msg": f"Unknown model {body['model']!r}; known: {', '.join(sorted(known_models))}.",
                    "type": "value_error",
                }
            ]
        )
    return body


def check_message_id(message_id: str) -> None:
    """A caller's own message id: 1-128 chars of ``[A-Za-z0-9_.:-]``."""
    if not MESSAGE_ID_PATTERN.match(message_id):
        raise BodyInvalid(
            [
                {
                    "loc": ["query", "message_id"],
                    "msg": "message_id must be 1-128 characters of [A-Za-z0-9_.:-].",
                    "type": "value_error",
                }
            ]
        )
