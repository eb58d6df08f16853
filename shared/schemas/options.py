"""The ChatBody's nested option objects: tools, tool_choice, thinking, output, MCP servers, metadata."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from jsonschema import SchemaError
from marshmallow import Schema, ValidationError, fields, post_load, pre_load, validate, validates_schema

from shared.grammar import SchemaBudget, SchemaLimits, SchemaPath, structure_problems
from shared.schemas.base import Bool, Int, Object, Str, StrictSchema, one_of
from shared.schemas.blocks import cache_control
from shared.schemas.metaschema import check_json_schema

TOOL_NAME = validate.Regexp(
    r"^[a-zA-Z0-9_-]{1,128}$", error="Tool names are 1-128 characters of [a-zA-Z0-9_-]."
)


#: The schema caps of the body being loaded, and what its schemas used so far (``load_chat_body``
#: sets both: the node and property caps hold for all of a request's schemas together).
SCHEMA_LIMITS: ContextVar[tuple[SchemaLimits, SchemaBudget]] = ContextVar("sluice_schema_limits")
DEFAULT_LIMITS = SchemaLimits()


def nested_errors(problems: list[tuple[SchemaPath, str]]) -> Any:
    """``[(path, msg)]`` as Marshmallow's nested messages, so each ``loc`` ends at its keyword."""
    root: dict[Any, Any] = {}
    for path, msg in problems:
        if not path:
            root.setdefault("_schema", []).append(msg)
            continue
        node = root
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node.setdefault(path[-1], []).append(msg)
    return root


class JsonSchemaField(Object):
    """A JSON Schema document (an object that is itself a valid schema), within the structure caps.

    The caps are checked first, by one cheap walk, so a hostile schema costs no more.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        loaded = super()._deserialize(value, attr, data, **kwargs)
        limits, budget = SCHEMA_LIMITS.get((DEFAULT_LIMITS, None))
        problems = structure_problems(loaded, limits, budget)
        if problems:
            raise ValidationError(nested_errors(problems))
        try:
            check_json_schema(loaded)
        except SchemaError as exc:
            raise ValidationError(f"Not a valid JSON Schema: {exc.message}") from None
        return loaded


class ToolSchema(StrictSchema):
    """``{name, description?, input_schema? (or inputSchema), type?, cache_control?}``."""

    name = Str(required=True, validate=TOOL_NAME)
    description = Str(allow_none=True)
    input_schema = JsonSchemaField()
    type = Str(allow_none=True, validate=one_of("custom"))
    cache_control = cache_control()

    @pre_load
    def _camel_case(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict) and "inputSchema" in data and "input_schema" not in data:
            data = {("input_schema" if k == "inputSchema" else k): v for k, v in data.items()}
        return data

    @post_load
    def _default_schema(self, loaded: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        loaded.setdefault("input_schema", {"type": "object", "properties": {}})
        return loaded


class ToolChoiceSchema(StrictSchema):
    """``{type: auto|any|tool|none, name? (required for tool), disable_parallel_tool_use?}``."""

    type = Str(required=True, validate=one_of("auto", "any", "tool", "none"))
    name = Str(validate=TOOL_NAME)
    disable_parallel_tool_use = Bool()

    @validates_schema
    def _name_with_tool(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("type") == "tool" and not data.get("name"):
            raise ValidationError("Required when tool_choice.type is 'tool'.", "name")
        if data.get("type") != "tool" and "name" in data:
            raise ValidationError("Only allowed when tool_choice.type is 'tool'.", "name")


class ThinkingSchema(StrictSchema):
    """Either the seed's ``{enabled, effort?}`` or Anthropic's ``{type, budget_tokens?}``."""

    enabled = Bool()
    effort = Str(validate=one_of("low", "medium", "high", "max"))
    type = Str(validate=one_of("enabled", "disabled"))
    budget_tokens = Int(validate=validate.Range(min=1024, error="Must be at least 1024."))

    @validates_schema
    def _one_form(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "enabled" in data and "type" in data:
            raise ValidationError("Give either 'enabled' (seed form) or 'type' (Anthropic form), not both.")
        if "enabled" not in data and "type" not in data:
            raise ValidationError("Give 'enabled' (seed form) or 'type' (Anthropic form).")
        if data.get("type") == "disabled" and "budget_tokens" in data:
            raise ValidationError("Only allowed when thinking is enabled.", "budget_tokens")

    @post_load
    def _normalise(self, loaded: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        on = loaded.pop("enabled", None)
        if on is not None:
            loaded["type"] = "enabled" if on else "disabled"
        return loaded


class OutputFormatSchema(StrictSchema):
    """``{type: "json_schema", schema}``."""

    type = Str(required=True, validate=one_of("json_schema"))
    schema = JsonSchemaField(required=True)


class OutputConfigSchema(StrictSchema):
    """``{effort?, format?}``."""

    effort = Str(allow_none=True, validate=one_of("low", "medium", "high", "max"))
    format = fields.Nested(OutputFormatSchema, allow_none=True)


class ResponseJsonSchema(StrictSchema):
    """OpenAI's ``json_schema`` wrapper: ``{name?, description?, schema, strict?}``."""

    name = Str()
    description = Str()
    schema = JsonSchemaField(required=True)
    strict = Bool(allow_none=True)


#: The keys of OpenAI's wrapper; an object with only these and an object ``schema`` is the wrapper.
WRAPPER_KEYS = frozenset({"name", "description", "schema", "strict"})


def is_schema_wrapper(value: Any) -> bool:
    """Whether a ``json_schema`` value is OpenAI's wrapper rather than the JSON Schema itself."""
    return (
        isinstance(value, Mapping) and isinstance(value.get("schema"), Mapping) and set(value) <= WRAPPER_KEYS
    )


class ResponseJsonSchemaField(fields.Field):
    """``response_format.json_schema``: OpenAI's wrapper ``{name?, description?, schema, strict?}``
    or (PrivateGPT's shape) the JSON Schema itself; both load as the wrapper."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValidationError("Not a valid object: a JSON Schema or {name?, schema, strict?}.")
        if is_schema_wrapper(value):
            return ResponseJsonSchema().load(value)
        return {"schema": JsonSchemaField().deserialize(value)}


class ResponseFormatSchema(StrictSchema):
    """Deprecated ``{type: "text"|"json_schema", json_schema?}``; mapped onto output_config.format."""

    type = Str(required=True, validate=one_of("text", "json_schema"))
    json_schema = ResponseJsonSchemaField()

    @validates_schema
    def _schema_when_json(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("type") == "json_schema" and "json_schema" not in data:
            raise ValidationError("Required when response_format.type is 'json_schema'.", "json_schema")


class ToolContextSchema(Schema):
    """A context object tagged by ``type``; its other fields are the tool's business."""

    class Meta:
        unknown = "include"

    type = Str(required=True, validate=validate.Length(min=1))


class ToolConfigurationSchema(StrictSchema):
    enabled = Bool(allow_none=True)
    allowed_tools = fields.List(Str(), allow_none=True)


class McpServerSchema(StrictSchema):
    """``{url, name?, type?: "url", authorization_token?, tool_configuration?}``."""

    type = Str(validate=one_of("url"))
    url = Str(required=True, validate=validate.URL(schemes={"http", "https"}, require_tld=False))
    name = Str(allow_none=True)
    authorization_token = Str(allow_none=True)
    tool_configuration = fields.Nested(ToolConfigurationSchema, allow_none=True)


class MetadataSchema(Schema):
    """Request metadata: ``user_id`` ≤ 512 chars; other keys allowed."""

    class Meta:
        unknown = "include"

    user_id = Str(allow_none=True, validate=validate.Length(max=512))
