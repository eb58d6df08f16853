"""The model registry: the default, and a TOML models file."""

import pytest

from shared.models import RegistryError, load_registry, parse_registry
from shared.settings import Settings


def test_default_registry_serves_only_the_embedded_model():
    """Without a models file, 'default' (and its alias) is the only model."""
    registry = load_registry(Settings())
    assert registry.names() == {"default", "smollm2-135m-instruct"}
    spec = registry.resolve("smollm2-135m-instruct")
    assert spec is not None and spec.provider == "llama_cpp" and spec.queue == "sluice.local"


def test_models_file_lists_models_with_aliases_and_queues(tmp_path):
    """A TOML file maps ids and aliases to providers, queues and options."""
    path = tmp_path / "models.toml"
    path.write_text(
        '[models.default]\nprovider = "llama_cpp"\n'
        '[models.fast]\nprovider = "scripted"\nqueue = "sluice.upstream"\naliases = ["quick"]\n'
        "[models.fast.options]\ntokens_per_second = 500\n"
    )
    registry = load_registry(Settings(models_file=str(path)))
    fast = registry.resolve("quick")
    assert fast is not None and fast.id == "fast" and fast.queue == "sluice.upstream"
    assert fast.options["tokens_per_second"] == 500
    assert registry.queues() == {"sluice.local", "sluice.upstream"}
    assert registry.resolve("default").options["n_ctx"] == 4096


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not toml [", "not valid TOML"),
        ("[other]\n", "at least one"),
        ("[models.x]\nqueue = 'q'\n", "'provider' is required"),
        ("[models.x]\nprovider = 'scripted'\ncolour = 1\n", "unknown keys"),
        ("[models.x]\nprovider = 'scripted'\naliases = ['y']\n[models.y]\nprovider = 'scripted'\n", "twice"),
    ],
)
def test_bad_models_files_are_refused_clearly(text, message):
    """A wrong models file fails with a message naming the problem."""
    with pytest.raises(RegistryError, match=message):
        parse_registry(text, Settings())
