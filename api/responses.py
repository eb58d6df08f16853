"""Marshmallow schemas of the API's responses: the OpenAPI document describes answers with these."""

from __future__ import annotations

from marshmallow import Schema, fields


class ErrorBodySchema(Schema):
    type = fields.String(required=True, metadata={"example": "invalid_request_error"})
    message = fields.String(required=True)


class ErrorDetailSchema(Schema):
    loc = fields.List(fields.Raw(), required=True, metadata={"example": ["messages", 0, "content"]})
    msg = fields.String(required=True)
    type = fields.String(required=True)


class ErrorSchema(Schema):
    """Anthropic's error envelope; validation errors add ``detail``."""

    type = fields.Constant("error", required=True)
    error = fields.Nested(ErrorBodySchema, required=True)
    detail = fields.Raw(
        metadata={"description": "[{loc, msg, type}] for validation errors; a string for 404"}
    )


class UsageSchema(Schema):
    input_tokens = fields.Integer(required=True)
    output_tokens = fields.Integer(required=True)


class MessageResponseSchema(Schema):
    """A non-streaming Message."""

    id = fields.String(required=True)
    type = fields.Constant("message", required=True)
    role = fields.Constant("assistant", required=True)
    content = fields.List(fields.Dict(), required=True)
    model = fields.String(required=True)
    stop_reason = fields.String(allow_none=True, required=True)
    stop_sequence = fields.String(allow_none=True, required=True)
    usage = fields.Nested(UsageSchema, required=True)


class AsyncCreatedSchema(Schema):
    message_id = fields.String(required=True)
    status = fields.Constant("pending", required=True)
    message = fields.String(required=True)


class StatusSchema(Schema):
    message_id = fields.String(required=True)
    status = fields.String(required=True)
    created_at = fields.String(allow_none=True)
    updated_at = fields.String(allow_none=True)
    completed_at = fields.String(allow_none=True)
    error_message = fields.String(allow_none=True)
    stream_type = fields.String()
    metadata = fields.Dict()


class CancelledSchema(Schema):
    message = fields.String(required=True)
    message_id = fields.String(required=True)
    status = fields.String(required=True)


class DeletedSchema(Schema):
    message_id = fields.String(required=True)
    deleted = fields.Boolean(required=True)


class TokenCountSchema(Schema):
    input_tokens = fields.Integer(required=True)


class ValidationResultSchema(Schema):
    valid = fields.Boolean(required=True)
    errors = fields.List(fields.Nested(ErrorDetailSchema), required=True)


class CapabilitiesSchema(Schema):
    honoured = fields.List(fields.String(), required=True)
    ignored = fields.List(fields.String(), required=True)
    refused = fields.List(fields.String(), required=True)


class LimitsSchema(Schema):
    context_window = fields.Integer(required=True)
    max_output_tokens = fields.Integer(required=True)
    default_max_tokens = fields.Integer(required=True)


class ModelSchema(Schema):
    id = fields.String(required=True)
    type = fields.Constant("model", required=True)
    display_name = fields.String(required=True)
    provider = fields.String(required=True)
    aliases = fields.List(fields.String(), required=True)
    queue = fields.String(required=True)
    capabilities = fields.Nested(CapabilitiesSchema, required=True)
    limits = fields.Nested(LimitsSchema, required=True)


class ModelListSchema(Schema):
    data = fields.List(fields.Nested(ModelSchema), required=True)
    has_more = fields.Boolean(required=True)
    first_id = fields.String(allow_none=True, required=True)
    last_id = fields.String(allow_none=True, required=True)


class HealthSchema(Schema):
    status = fields.String(required=True)


class ReadySchema(Schema):
    ready = fields.Boolean(required=True)
    redis = fields.Boolean(required=True)
    workers = fields.List(fields.Raw(), required=True)
