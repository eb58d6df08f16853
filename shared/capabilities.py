"""What each model honours: capability names, per-provider defaults, and the check that refuses the rest.

A request feature is *honoured* (it changes the output as documented), *ignored*
(accepted, listed as ignored in ``GET /v1/models/{id}``, no effect: only for hints
such as ``cache_control`` that cannot change an answer's correctness), or refused
with a 400 that names the field.

``ModelSpec.capabilities`` (the models file's ``capabilities = [...]``), when set, names the
optional features the model honours (``tools``, ``json_schema``, ``thinking``, ``images``...):
they replace the provider's optional defaults, while its core (system, turns, sampling, seed,
stop sequences, token counting) stays as the provider has it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from shared.grammar import SchemaLimits, constrained_schemas, grammar_problems
from shared.models import ModelRegistry, ModelSpec
from shared.schemas import BodyInvalid, load_chat_body, problem
from shared.schemas.errors import Loc
from shared.schemas.options import is_schema_wrapper

#: Every capability name, with what a request does to need it.
FEATURES: dict[str, str] = {
    "system": "a system prompt",
    "multi_turn": "earlier assistant turns (and an assistant prefill as the last turn)",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "seed": "seed (repeatable output)",
    "stop_sequences": "stop_sequences",
    "json_schema": "output_config.format / response_format json_schema",
    "effort": "output_config.effort or thinking.effort",
    "tools": "tools and tool_choice (tool_use / tool_result blocks)",
    "tool_context": "tool_context",
    "thinking": "thinking enabled",
    "thinking_history": "thinking / redacted_thinking blocks in earlier assistant turns",
    "images": "image blocks",
    "documents": "document blocks",
    "mcp_servers": "mcp_servers",
    "container": "container",
    "skills": "maximum_loaded_skills",
    "context_management": "context_management",
    "cache_control": "cache_control (prompt caching hints)",
    "service_tier": "service_tier",
    "inference_geo": "inference_geo",
    "count_tokens": "POST /v1/messages/count_tokens with the model's real tokenizer",
}

SAMPLING = frozenset(
    {"temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty"}
)
HINTS = frozenset({"cache_control", "service_tier", "inference_geo"})


@dataclass(frozen=True)
class Capabilities:
    """What a model honours and what it accepts but ignores; the rest is refused."""

    honoured: frozenset[str]
    ignored: frozenset[str] = frozenset()

    def refused(self) -> frozenset[str]:
        """Capability names a request naming them is refused for."""
        return frozenset(FEATURES) - self.honoured - self.ignored


PROVIDER_DEFAULTS: dict[str, Capabilities] = {
    "llama_cpp": Capabilities(
        honoured=SAMPLING
        | {"system", "multi_turn", "seed", "stop_sequences", "json_schema", "tools", "count_tokens"},
        ignored=HINTS | {"thinking_history", "tool_context"},
    ),
    # The test double: it replays a script, so everything but the cuts is ignored, and said so.
    "scripted": Capabilities(
        honoured=frozenset({"stop_sequences"}),
        ignored=frozenset(FEATURES) - {"stop_sequences", "count_tokens"},
    ),
    # Sampling fields are sent as they are (vLLM, llama.cpp and Ollama take them all).
    "openai": Capabilities(
        honoured=SAMPLING
        | {"system", "multi_turn", "seed", "stop_sequences", "json_schema", "tools", "images"},
        ignored=HINTS | {"thinking_history"},
    ),
    "anthropic": Capabilities(
        honoured=frozenset(FEATURES) - SAMPLING - {"seed", "count_tokens"}
        | {"temperature", "top_p", "top_k"},
    ),
}

BASIC = Capabilities(honoured=frozenset({"system", "multi_turn", "stop_sequences"}), ignored=HINTS)


#: Features a provider honours by its nature; a model's own list names the optional rest.
CORE = SAMPLING | {"system", "multi_turn", "seed", "stop_sequences", "count_tokens"}


def capabilities_of(spec: ModelSpec) -> Capabilities:
    """The capabilities of ``spec``: its provider's core plus its own optional list, else the defaults."""
    default = PROVIDER_DEFAULTS.get(spec.provider, BASIC)
    # Fields an upstream refuses are not sent (the openai provider's ``drop_params``): a request
    # that sets one is refused with a 400 rather than answered as if it had been honoured.
    dropped = frozenset(spec.options.get("drop_params") or ()) & set(FEATURES)
    if spec.capabilities:
        honoured = (default.honoured & CORE) | (spec.capabilities & set(FEATURES))
        return Capabilities(honoured=frozenset(honoured) - dropped, ignored=default.ignored - honoured)
    if dropped:
        return Capabilities(honoured=default.honoured - dropped, ignored=default.ignored - dropped)
    return default


#: Body fields whose presence (a non-empty value) asks for the capability of the same name.
_PLAIN_FEATURES = (*sorted(SAMPLING), "seed", "stop_sequences", "mcp_servers", "tool_context")


def requested(body: dict[str, Any]) -> Iterator[tuple[str, tuple[str | int, ...]]]:
    """``(capability, loc)`` for every feature a normalised body asks for."""
    if body.get("system"):
        yield "system", ("system",)
    for name in _PLAIN_FEATURES:
        if body.get(name) not in (None, [], {}):
            yield name, (name,)
    for name, feature in (
        ("container", "container"),
        ("maximum_loaded_skills", "skills"),
        ("context_management", "context_management"),
        ("service_tier", "service_tier"),
        ("inference_geo", "inference_geo"),
        ("cache_control", "cache_control"),
    ):
        if body.get(name) is not None:
            yield feature, (name,)
    if body.get("tools"):
        yield "tools", ("tools",)
    output = body.get("output_config") or {}
    if output.get("format"):
        yield "json_schema", ("output_config", "format")
    if output.get("effort"):
        yield "effort", ("output_config", "effort")
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        yield "thinking", ("thinking",)
    if thinking.get("effort"):
        yield "effort", ("thinking", "effort")
    yield from _requested_in_messages(body["messages"])


_BLOCK_FEATURES = {
    "image": "images",
    "document": "documents",
    "tool_use": "tools",
    "tool_result": "tools",
    "thinking": "thinking_history",
    "redacted_thinking": "thinking_history",
}


def _requested_in_messages(messages: list[dict[str, Any]]) -> Iterator[tuple[str, tuple[str | int, ...]]]:
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            yield "multi_turn", ("messages", i)
        for j, block in enumerate(message["content"]):
            at: tuple[str | int, ...] = ("messages", i, "content", j)
            if block["type"] in _BLOCK_FEATURES:
                yield _BLOCK_FEATURES[block["type"]], at
            if block.get("cache_control") is not None:
                yield "cache_control", (*at, "cache_control")
            for k, inner in enumerate(block.get("content") or [] if block["type"] == "tool_result" else []):
                if inner["type"] in _BLOCK_FEATURES:
                    yield _BLOCK_FEATURES[inner["type"]], (*at, "content", k)


def check_capabilities(
    body: dict[str, Any], spec: ModelSpec, limits: SchemaLimits | None = None, format_loc: Loc | None = None
) -> None:
    """Refuse (``BodyInvalid``) what ``spec`` cannot honour, and a max_tokens over its limit.

    On a grammar-constrained model every schema must also convert within ``limits``; each
    problem's loc ends at the keyword (``format_loc``: where the client put the output schema).
    """
    caps = capabilities_of(spec)
    refused = caps.refused()
    details = [
        problem(loc, f"Model {spec.id!r} cannot honour {FEATURES[name]}.", "unsupported")
        for name, loc in requested(body)
        if name in refused
    ]
    if spec.provider == "llama_cpp":
        for loc, schema in constrained_schemas(body):
            if loc[0] == "output_config" and format_loc is not None:
                loc = format_loc
            for path, msg in grammar_problems(schema, limits or SchemaLimits()):
                details.append(problem((*loc, *path), msg, "unsupported"))
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and max_tokens > spec.max_output_tokens:
        details.append(
            problem(("max_tokens",), f"Model {spec.id!r} produces at most {spec.max_output_tokens} tokens.")
        )
    if details:
        raise BodyInvalid(details)


def output_schema_loc(payload: Any) -> Loc:
    """Where the output format's JSON Schema sits in the body as the client sent it."""
    legacy = payload.get("response_format") if isinstance(payload, Mapping) else None
    if isinstance(legacy, Mapping) and legacy.get("type") == "json_schema":
        wrapped = is_schema_wrapper(legacy.get("json_schema"))
        return ("response_format", "json_schema", "schema") if wrapped else ("response_format", "json_schema")
    return ("output_config", "format", "schema")


def load_request(
    payload: Any, registry: ModelRegistry, limits: SchemaLimits | None = None
) -> tuple[dict[str, Any], ModelSpec]:
    """Validate a ChatBody completely: schema, known model, what that model can honour, and what
    each JSON Schema in it may cost (``limits``, the defaults when None)."""
    body = load_chat_body(payload, registry.names(), limits)
    spec = registry.resolve(body["model"])
    assert spec is not None, "load_chat_body checked the model"
    check_capabilities(body, spec, limits, output_schema_loc(payload))
    return body, spec
