"""Capabilities: what a model refuses gets a 400 at the field, what it ignores is listed."""

from __future__ import annotations

import pytest

from shared.capabilities import FEATURES, PROVIDER_DEFAULTS, capabilities_of, load_request
from shared.models import ModelRegistry, ModelSpec
from shared.schemas import BodyInvalid

LOCAL = ModelSpec(id="default", provider="llama_cpp", max_output_tokens=100)
REGISTRY = ModelRegistry(
    [LOCAL, ModelSpec(id="big", provider="anthropic", capabilities=frozenset({"thinking"}))]
)
USER = [{"role": "user", "content": "hi"}]


def test_every_provider_default_names_known_features():
    """Provider defaults only name capabilities listed in FEATURES, and never both honour and ignore one."""
    for caps in PROVIDER_DEFAULTS.values():
        assert caps.honoured | caps.ignored <= set(FEATURES)
        assert not caps.honoured & caps.ignored


def test_refused_feature_names_its_field():
    """Thinking on the embedded model is refused at loc ["thinking"]."""
    with pytest.raises(BodyInvalid) as caught:
        load_request({"messages": USER, "thinking": {"enabled": True}}, REGISTRY)
    assert caught.value.details == [
        {"loc": ["thinking"], "msg": "Model 'default' cannot honour thinking enabled.", "type": "unsupported"}
    ]


def test_ignored_feature_passes():
    """cache_control is accepted on the embedded model and listed as ignored."""
    _body, spec = load_request({"messages": USER, "cache_control": {"type": "ephemeral"}}, REGISTRY)
    assert spec is LOCAL and "cache_control" in capabilities_of(spec).ignored


def test_spec_capabilities_replace_the_defaults():
    """A model's own list names its optional features; the provider's core stays."""
    _body, spec = load_request({"model": "big", "messages": USER, "thinking": {"enabled": True}}, REGISTRY)
    assert "thinking" in capabilities_of(spec).honoured and "system" in capabilities_of(spec).honoured
    with pytest.raises(BodyInvalid):
        load_request({"model": "big", "messages": USER, "tools": [{"name": "t"}]}, REGISTRY)


def test_max_tokens_over_the_model_limit():
    """max_tokens above the model's max_output_tokens is a 400 at max_tokens."""
    with pytest.raises(BodyInvalid) as caught:
        load_request({"messages": USER, "max_tokens": 101}, REGISTRY)
    assert caught.value.details[0]["loc"] == ["max_tokens"]


def test_dropped_upstream_params_are_refused_not_silently_dropped():
    """An openai model's drop_params become refused capabilities: a 400, never a silent drop."""
    from shared.capabilities import capabilities_of
    from shared.models import ModelSpec

    spec = ModelSpec(id="gpt", provider="openai", options={"drop_params": ["top_k", "min_p", "priority"]})
    caps = capabilities_of(spec)
    assert {"top_k", "min_p"} <= caps.refused()
    assert "temperature" in caps.honoured and "top_k" not in caps.honoured
