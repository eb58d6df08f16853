"""The ChatBody schema: every field of the contract, its cross-field rules, and its normalisation.

Normalisation happens here, once: ``system`` becomes a list of System objects,
``system``-role messages move into ``system``, string content becomes a list of
text blocks, ``response_format`` becomes ``output_config.format``, both forms of
``thinking`` become ``{type, budget_tokens?, effort?}``, ``inputSchema`` becomes
``input_schema``. Whatever passes ``load_chat_body`` is what workers read.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from marshmallow import ValidationError, fields, post_load, pre_load, validate, validates_schema

from shared.grammar import SchemaBudget, SchemaLimits
from shared.schemas.base import AnyJson, Bool, Int, Number, Str, StrictSchema, one_of
from shared.schemas.blocks import ASSISTANT_ONLY, USER_ONLY, Blocks, CacheControlSchema, SystemField
from shared.schemas.errors import BodyInvalid, Loc, error_details, problem
from shared.schemas.options import (
    SCHEMA_LIMITS,
    McpServerSchema,
    MetadataSchema,
    OutputConfigSchema,
    ResponseFormatSchema,
    ThinkingSchema,
    ToolChoiceSchema,
    ToolContextSchema,
    ToolSchema,
)

MAX_STOP_SEQUENCES = 16


def unit_interval() -> validate.Range:
    """``[0, 1]``."""
    return validate.Range(min=0, max=1)


class MessageSchema(StrictSchema):
    """``{role: user|assistant|system, content: string | [blocks]}``."""

    role = Str(required=True, validate=one_of("user", "assistant", "system"))
    content = Blocks(required=True)


class ChatBodySchema(StrictSchema):
    """The request body of ``/v1/messages``, ``/v1/messages/async`` and ``/v1/messages/validate``."""

    model = Str(load_default="default", validate=validate.Length(min=1, max=256))
    messages = fields.List(
        fields.Nested(MessageSchema),
        required=True,
        validate=validate.Length(min=1, error="At least one message is required."),
    )
    max_tokens = Int(allow_none=True, validate=validate.Range(min=1))
    system = SystemField(allow_none=True, load_default=None)
    stream = Bool(load_default=False)
    tools = fields.List(fields.Nested(ToolSchema), allow_none=True)
    tool_choice = fields.Nested(ToolChoiceSchema, allow_none=True)
    thinking = fields.Nested(ThinkingSchema, allow_none=True)
    output_config = fields.Nested(OutputConfigSchema, allow_none=True)
    response_format = fields.Nested(ResponseFormatSchema, allow_none=True)
    cache_control = fields.Nested(CacheControlSchema, allow_none=True)
    tool_context = fields.List(fields.Nested(ToolContextSchema), allow_none=True)
    mcp_servers = fields.List(fields.Nested(McpServerSchema), allow_none=True)
    container = Str(allow_none=True)
    priority = Int(allow_none=True)
    seed = Int(allow_none=True)
    temperature = Number(allow_none=True, validate=unit_interval())
    top_p = Number(allow_none=True, validate=unit_interval())
    top_k = Int(allow_none=True, validate=validate.Range(min=0))
    min_p = Number(allow_none=True, validate=unit_interval())
    repetition_penalty = Number(
        allow_none=True,
        validate=validate.Range(min=0, max=2, min_inclusive=False),
        metadata={"exclusiveMinimum": 0},
    )
    presence_penalty = Number(allow_none=True, validate=validate.Range(min=-2, max=2))
    frequency_penalty = Number(allow_none=True, validate=validate.Range(min=-2, max=2))
    stop_sequences = fields.List(
        Str(validate=validate.Length(min=1, max=256)),
        allow_none=True,
        validate=validate.Length(max=MAX_STOP_SEQUENCES),
    )
    metadata = fields.Nested(MetadataSchema, allow_none=True)
    service_tier = Str(allow_none=True, validate=one_of("auto", "standard_only"))
    inference_geo = Str(allow_none=True)
    correlation_id = Str(allow_none=True, validate=validate.Length(max=256))
    maximum_loaded_skills = Int(allow_none=True, validate=validate.Range(min=1))
    context_management = AnyJson(allow_none=True)

    @pre_load
    def _object(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ValidationError("The request body must be a JSON object.")
        return data

    @validates_schema
    def _cross_field(self, data: dict[str, Any], **kwargs: Any) -> None:
        found: list[tuple[Loc, str]] = []
        _check_turns(data.get("messages") or [], found)
        _check_tools(data, found)
        if found:
            raise ValidationError(_nest(found))

    @post_load
    def _normalise(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        system = list(data.get("system") or [])
        messages = []
        for message in data["messages"]:
            if message["role"] == "system":
                system.extend({"type": "text", "text": b["text"]} for b in message["content"])
            else:
                messages.append(message)
        data["system"], data["messages"] = system, messages
        response_format = data.pop("response_format", None)
        if response_format and response_format["type"] == "json_schema":
            fmt = {"type": "json_schema", "schema": response_format["json_schema"]["schema"]}
            data["output_config"] = {**(data.get("output_config") or {}), "format": fmt}
        if data.get("tools") and not data.get("tool_choice"):
            data["tool_choice"] = {"type": "auto"}
        return data


def _check_turns(messages: list[dict[str, Any]], found: list[tuple[Loc, str]]) -> None:
    """Roles, block placement, unique tool_use ids, every tool_result answering a known call."""
    if all(m.get("role") == "system" for m in messages):
        found.append((("messages",), "At least one user or assistant message is required."))
    seen_ids: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role")
        for j, block in enumerate(message.get("content") or []):
            kind = block.get("type")
            at: Loc = ("messages", i, "content", j)
            if role == "system" and kind != "text":
                found.append((at, "A system message may hold only text blocks."))
            elif kind in ASSISTANT_ONLY and role != "assistant":
                found.append((at, f"A {kind} block may appear only in an assistant message."))
            elif kind in USER_ONLY and role != "user":
                found.append((at, f"A {kind} block may appear only in a user message."))
            elif kind == "tool_use":
                if block["id"] in seen_ids:
                    found.append(((*at, "id"), f"Duplicate tool_use id {block['id']!r}."))
                seen_ids.add(block["id"])
            elif kind == "tool_result" and block["tool_use_id"] not in seen_ids:
                found.append(
                    ((*at, "tool_use_id"), f"No earlier tool_use block has id {block['tool_use_id']!r}.")
                )


def _check_tools(data: dict[str, Any], found: list[tuple[Loc, str]]) -> None:
    """Unique tool names, a tool_choice that fits them, and what cannot go with tools."""
    tools = data.get("tools") or []
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if tool["name"] in names:
            found.append((("tools", i, "name"), f"Duplicate tool name {tool['name']!r}."))
        names.add(tool["name"])
    choice = data.get("tool_choice") or {}
    if choice.get("type") in ("any", "tool") and not tools:
        found.append((("tool_choice", "type"), f"tool_choice {choice['type']!r} needs at least one tool."))
    elif choice.get("type") == "tool" and choice.get("name") not in names:
        found.append((("tool_choice", "name"), f"No tool named {choice.get('name')!r} is given in tools."))
    if data.get("tool_context") and not tools:
        found.append((("tool_context",), "tool_context is only allowed together with tools."))
    output_format = (data.get("output_config") or {}).get("format")
    response_format = data.get("response_format") or {}
    if output_format and response_format.get("type") == "json_schema":
        found.append((("response_format",), "Give output_config.format or response_format, not both."))
    if tools and output_format:
        found.append((("output_config", "format"), "Structured output cannot be combined with tools."))
    elif tools and response_format.get("type") == "json_schema":
        found.append((("response_format",), "Structured output cannot be combined with tools."))
    thinking = data.get("thinking") or {}
    budget, max_tokens = thinking.get("budget_tokens"), data.get("max_tokens")
    if budget is not None and max_tokens is not None and budget >= max_tokens:
        found.append((("thinking", "budget_tokens"), "Must be less than max_tokens."))


def _nest(found: list[tuple[Loc, str]]) -> dict[Any, Any]:
    """``[(loc, msg)]`` as Marshmallow's nested error dict."""
    root: dict[Any, Any] = {}
    for loc, msg in found:
        node = root
        for key in loc:
            child = node.setdefault(key, {})
            if isinstance(child, list):  # a message at this very path already: keep it as "_schema"
                child = node[key] = {"_schema": child}
            node = child
        node.setdefault("_schema", []).append(msg)
    return root


#: One instance for every load: building a schema (copying its declared fields) cost more than
#: loading a small body. Marshmallow keeps no per-load state on it, so threads may share it.
_CHAT_BODY = ChatBodySchema()


def load_chat_body(
    payload: Any, known_models: Collection[str], limits: SchemaLimits | None = None
) -> dict[str, Any]:
    """Validate and normalise a ChatBody; raise ``BodyInvalid`` listing every problem.

    ``limits`` caps what each JSON Schema in it may cost (the defaults when None).
    """
    token = SCHEMA_LIMITS.set((limits or SchemaLimits(), SchemaBudget()))
    try:
        body: dict[str, Any] = _CHAT_BODY.load(payload)
    except ValidationError as exc:
        raise BodyInvalid(error_details(exc.messages)) from None
    finally:
        SCHEMA_LIMITS.reset(token)
    if body["model"] not in known_models:
        known = ", ".join(sorted(known_models))
        raise BodyInvalid([problem(("model",), f"Unknown model {body['model']!r}; known: {known}.")])
    return body
