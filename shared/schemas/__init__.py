"""Marshmallow schemas for request bodies, and the one place validation errors get their shape.

``load_chat_body`` validates and normalises a ChatBody (see ``chat.py``);
``BodyInvalid`` carries ``[{loc, msg, type}]``, one entry per problem.
"""

from shared.schemas.chat import ChatBodySchema, load_chat_body
from shared.schemas.errors import BodyInvalid, check_message_id, error_details, problem

__all__ = ["BodyInvalid", "ChatBodySchema", "check_message_id", "error_details", "load_chat_body", "problem"]
