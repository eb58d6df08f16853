"""Body-only endpoints: count a body's prompt tokens, or validate it without running anything."""

from __future__ import annotations

from flask import Response, jsonify

from api.body import BodyTooDeep
from api.errors import ApiError, InvalidRequest
from api.services import services, spend_rate_token
from api.views.messages import load_chat_request
from shared.capabilities import capabilities_of
from shared.schemas import BodyInvalid, problem
from shared.tokenizer import TokenizerError, count_tokens


def count_message_tokens() -> Response:
    """``{input_tokens}`` for a ChatBody, with the model's real chat template and tokenizer."""
    spend_rate_token(services())
    body, spec = load_chat_request(services())
    if "count_tokens" not in capabilities_of(spec).honoured:
        message = f"Model {spec.id!r} cannot count tokens locally."
        raise InvalidRequest(message, [problem(("model",), message, "unsupported")])
    try:
        return jsonify({"input_tokens": count_tokens(spec, body)})
    except TokenizerError as exc:
        raise ApiError(500, f"Cannot tokenize for model {spec.id!r}: {exc}") from None


def validate_message() -> Response:
    """Dry run: ``{valid, errors}`` for a body; nothing is stored or queued."""
    spend_rate_token(services())
    try:
        load_chat_request(services())
    except BodyInvalid as exc:
        return jsonify({"valid": False, "errors": exc.details})
    except BodyTooDeep:
        raise
    except InvalidRequest as exc:  # malformed JSON or a wrong content type
        return jsonify({"valid": False, "errors": exc.detail or [problem(("body",), exc.message)]})
    return jsonify({"valid": True, "errors": []})
