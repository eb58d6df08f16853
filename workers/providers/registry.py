"""The explicit provider registry: provider name → factory taking a ``ModelSpec``."""

from __future__ import annotations

from collections.abc import Callable

from shared.models import ModelSpec
from shared.settings import WorkerSettings
from workers.providers.base import Provider


def _llama_cpp(spec: ModelSpec, settings: WorkerSettings | None) -> Provider:
    from workers.providers.llama_cpp import LlamaCppProvider

    return LlamaCppProvider.from_spec(spec, settings)


def _scripted(spec: ModelSpec, settings: WorkerSettings | None) -> Provider:
    from workers.providers.scripted import ScriptedProvider

    return ScriptedProvider.from_spec(spec)


def _openai(spec: ModelSpec, settings: WorkerSettings | None) -> Provider:
    from workers.providers.openai import OpenAIProvider

    return OpenAIProvider.from_spec(spec, settings)


def _anthropic(spec: ModelSpec, settings: WorkerSettings | None) -> Provider:
    from workers.providers.anthropic import AnthropicProvider

    return AnthropicProvider.from_spec(spec)


PROVIDERS: dict[str, Callable[[ModelSpec, WorkerSettings | None], Provider]] = {
    "llama_cpp": _llama_cpp,
    "scripted": _scripted,
    "openai": _openai,
    "anthropic": _anthropic,
}


def build_provider(spec: ModelSpec, settings: WorkerSettings | None = None) -> Provider:
    """The provider for ``spec`` (configured by ``settings`` where it reads any); its model loads now."""
    try:
        factory = PROVIDERS[spec.provider]
    except KeyError:
        raise ValueError(f"model {spec.id!r}: unknown provider {spec.provider!r}") from None
    return factory(spec, settings)
