"""Content blocks (by ``type``), cache_control, and ``system`` in every accepted form."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from shared.schemas.base import AnyJson, Bool, Object, Str, StrictSchema, Tagged, one_of

IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


class CacheControlSchema(StrictSchema):
    """``{type: "ephemeral", ttl?: "5m"|"1h"}``."""

    type = Str(required=True, validate=one_of("ephemeral"))
    ttl = Str(validate=one_of("5m", "1h"))


def cache_control() -> fields.Field:
    """The optional ``cache_control`` every block may carry."""
    return fields.Nested(CacheControlSchema, allow_none=True)


class TextBlockSchema(StrictSchema):
    """``{type: "text", text}``: text is non-empty."""

    type = Str(required=True, validate=one_of("text"))
    text = Str(required=True, validate=validate.Length(min=1, error="Text must not be empty."))
    cache_control = cache_control()
    citations = fields.List(Object(), allow_none=True)


class Base64ImageSource(StrictSchema):
    type = Str(required=True, validate=one_of("base64"))
    media_type = Str(required=True, validate=one_of(*IMAGE_MEDIA_TYPES))
    data = Str(required=True, validate=validate.Length(min=1))


class UrlSource(StrictSchema):
    type = Str(required=True, validate=one_of("url"))
    url = Str(required=True, validate=validate.URL(schemes={"http", "https"}, require_tld=False))


class FileSource(StrictSchema):
    type = Str(required=True, validate=one_of("file"))
    file_id = Str(required=True, validate=validate.Length(min=1))


class Base64PdfSource(StrictSchema):
    type = Str(required=True, validate=one_of("base64"))
    media_type = Str(required=True, validate=one_of("application/pdf"))
    data = Str(required=True, validate=validate.Length(min=1))


class PlainTextSource(StrictSchema):
    type = Str(required=True, validate=one_of("text"))
    media_type = Str(required=True, validate=one_of("text/plain"))
    data = Str(required=True)


class ContentSource(StrictSchema):
    type = Str(required=True, validate=one_of("content"))
    content = fields.List(Tagged({"text": TextBlockSchema}, "content block"), required=True)


class ImageBlockSchema(StrictSchema):
    """``{type: "image", source}``: base64 (jpeg/png/gif/webp), url or file."""

    type = Str(required=True, validate=one_of("image"))
    source = Tagged(
        {"base64": Base64ImageSource, "url": UrlSource, "file": FileSource}, "image source", required=True
    )
    cache_control = cache_control()


class DocumentBlockSchema(StrictSchema):
    """``{type: "document", source, title?, context?, citations?}``."""

    type = Str(required=True, validate=one_of("document"))
    source = Tagged(
        {
            "base64": Base64PdfSource,
            "text": PlainTextSource,
            "url": UrlSource,
            "file": FileSource,
            "content": ContentSource,
        },
        "document source",
        required=True,
    )
    title = Str(allow_none=True)
    context = Str(allow_none=True)
    citations = Object(allow_none=True)
    cache_control = cache_control()


class ToolUseBlockSchema(StrictSchema):
    """``{type: "tool_use", id, name, input}`` (assistant turns only)."""

    type = Str(required=True, validate=one_of("tool_use"))
    id = Str(required=True, validate=validate.Length(min=1, max=256))
    name = Str(required=True, validate=validate.Length(min=1, max=128))
    input = Object(required=True)
    cache_control = cache_control()


TOOL_RESULT_CONTENT: dict[str, type[StrictSchema]] = {
    "text": TextBlockSchema,
    "image": ImageBlockSchema,
    "document": DocumentBlockSchema,
}


class ToolResultContent(fields.Field):
    """A tool result's content: a string or a list of text/image/document blocks."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            return [{"type": "text", "text": value}] if value else []
        if not isinstance(value, list):
            raise ValidationError("Tool result content must be a string or a list of content blocks.")
        return load_list(value, Tagged(TOOL_RESULT_CONTENT, "content block"))


class ToolResultBlockSchema(StrictSchema):
    """``{type: "tool_result", tool_use_id, content?, is_error?}`` (user turns only)."""

    type = Str(required=True, validate=one_of("tool_result"))
    tool_use_id = Str(required=True, validate=validate.Length(min=1, max=256))
    content = ToolResultContent(load_default=list)
    is_error = Bool()
    cache_control = cache_control()


class ThinkingBlockSchema(StrictSchema):
    """``{type: "thinking", thinking, signature}`` (assistant turns only)."""

    type = Str(required=True, validate=one_of("thinking"))
    thinking = Str(required=True)
    signature = Str(required=True)
    cache_control = cache_control()


class RedactedThinkingBlockSchema(StrictSchema):
    """``{type: "redacted_thinking", data}`` (assistant turns only)."""

    type = Str(required=True, validate=one_of("redacted_thinking"))
    data = Str(required=True)
    cache_control = cache_control()


BLOCK_SCHEMAS: dict[str, type[StrictSchema]] = {
    "text": TextBlockSchema,
    "image": ImageBlockSchema,
    "document": DocumentBlockSchema,
    "tool_use": ToolUseBlockSchema,
    "tool_result": ToolResultBlockSchema,
    "thinking": ThinkingBlockSchema,
    "redacted_thinking": RedactedThinkingBlockSchema,
}

ASSISTANT_ONLY = frozenset({"tool_use", "thinking", "redacted_thinking"})
USER_ONLY = frozenset({"tool_result"})


def load_list(value: list[Any], item: fields.Field) -> list[Any]:
    """Each item through ``item``; errors keyed by index."""
    errors: dict[int, Any] = {}
    loaded: list[Any] = []
    for index, entry in enumerate(value):
        try:
            loaded.append(item.deserialize(entry))
        except ValidationError as exc:
            errors[index] = exc.messages
    if errors:
        raise ValidationError(errors)
    return loaded


class Blocks(fields.Field):
    """A non-empty string (one text block) or a non-empty list of blocks tagged by ``type``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            if not value:
                raise ValidationError("Content must not be empty.")
            return [{"type": "text", "text": value}]
        if not isinstance(value, list):
            raise ValidationError("Content must be a string or a list of content blocks.")
        if not value:
            raise ValidationError("Content must not be empty.")
        return load_list(value, Tagged(BLOCK_SCHEMAS, "content block"))


class SystemObjectSchema(StrictSchema):
    """A System object: ``{type?: "text", text, cache_control?}``."""

    type = Str(validate=one_of("text"))
    text = Str(required=True)
    cache_control = cache_control()
    citations = fields.List(Object(), allow_none=True)

    @validates_schema
    def _no_extra(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not isinstance(data.get("text"), str):
            raise ValidationError("Missing data for required field.", "text")


class SystemField(fields.Field):
    """``system``: a string, a System object, or a list of either; normalised to a list of System."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, list):
            return [item for item in load_list(value, _SystemItem()) if item["text"]]
        loaded = _SystemItem().deserialize(value)
        return [loaded] if loaded["text"] else []


class _SystemItem(fields.Field):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            return {"type": "text", "text": value}
        if not isinstance(value, dict):
            raise ValidationError("A system entry is a string or a {type: 'text', text} object.")
        loaded: dict[str, Any] = SystemObjectSchema().load(value)
        loaded["type"] = "text"
        return loaded


__all__ = ["AnyJson", "Blocks", "CacheControlSchema", "SystemField"]
