"""Loading the embedded model, and its sampling defaults."""

from __future__ import annotations

from typing import Any

from shared.tokenizer import default_model_path

# Anthropic's defaults where it has them (temperature 1, top_p/top_k off); min_p keeps a
# small model coherent at temperature 1 and is documented as the default.
SAMPLING_DEFAULTS = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.05,
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}


def load_llama(path: str | None, n_ctx: int, n_threads: int) -> Any:
    """Load a GGUF model (imports llama_cpp only here, in the worker process)."""
    import llama_cpp

    return llama_cpp.Llama(
        model_path=path or default_model_path(),
        n_ctx=n_ctx,
        n_threads=n_threads,
        n_threads_batch=n_threads,
        verbose=False,
    )
