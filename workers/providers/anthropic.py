"""The ``anthropic`` provider: Anthropic's Messages API (or any server speaking it) via the official SDK.

The SDK's own retries are off: Sluice retries before the first token by ``ModelSpec.retry``,
like every upstream. Closing the generator closes the upstream connection at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic

from shared.models import ModelSpec
from workers.providers.anthropic_translate import EventTranslator, UpstreamStreamError, to_anthropic_params
from workers.providers.base import ProviderError, ProviderEvent, ProviderStream, Started
from workers.providers.upstream import (
    Feed,
    UpstreamError,
    UpstreamUnavailable,
    api_key,
    is_transport_error,
    retried_stream,
    status_error,
)

#: Sent when the model has no ``api_key_env`` (a keyless server such as another Sluice).
NO_KEY = "no-key"


def _as_dicts(events: Iterator[Any]) -> Iterator[dict[str, Any]]:
    for event in events:
        yield event.model_dump(mode="json") if hasattr(event, "model_dump") else dict(event)


def sdk_error(where: str, exc: Exception) -> ProviderError:
    """The Sluice error for an SDK or transport exception."""
    if isinstance(exc, anthropic.APIStatusError) and exc.status_code < 400:
        # An ``error`` event inside a 200 stream: the SDK raises it as a status error.
        body: dict[str, Any] = exc.body if isinstance(exc.body, dict) else {}
        error: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else body
        failure = UpstreamStreamError(f"{where}: {error.get('message') or exc.message}")
        failure.error_type = str(error.get("type") or "api_error")
        return failure
    if isinstance(exc, anthropic.APIStatusError):
        return status_error(where, exc.status_code, exc.response.headers, str(exc.message))
    if isinstance(exc, anthropic.APIConnectionError) or is_transport_error(exc):
        return UpstreamUnavailable(f"{where}: {type(exc).__name__}: {exc}")
    if isinstance(exc, ProviderError):
        return exc
    return ProviderError(f"{where}: {type(exc).__name__}: {exc}")


@dataclass
class _Opened:
    feed: Feed[dict[str, Any]]
    translator: EventTranslator
    first: list[ProviderEvent]


@dataclass
class AnthropicProvider:
    """Streams from the Messages API at ``spec.base_url`` (Anthropic's own when unset)."""

    spec: ModelSpec
    client: anthropic.Anthropic
    slots: threading.BoundedSemaphore | None = None

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> AnthropicProvider:
        slots = threading.BoundedSemaphore(spec.concurrency) if spec.concurrency else None
        timeouts = spec.timeouts
        # The read timeout is a backstop only: Feed enforces first-token and idle deadlines.
        read = max(timeouts.first_token, timeouts.idle) + 5
        client = anthropic.Anthropic(
            api_key=NO_KEY,
            base_url=spec.base_url,
            max_retries=0,
            timeout=anthropic.Timeout(read, connect=timeouts.connect),
            default_headers=dict(spec.options.get("headers") or {}),
        )
        return cls(spec=spec, client=client, slots=slots)

    def _sdk(self) -> anthropic.Anthropic:
        """The client with the key read now from the worker's environment."""
        return self.client.with_options(api_key=api_key(self.spec) or NO_KEY)

    def _open(self, params: dict[str, Any]) -> _Opened:
        where = f"upstream {self.spec.base_url or 'anthropic'}"
        extra = {k: v for k, v in params.items() if k not in ("model", "max_tokens", "messages")}
        try:
            stream = self._sdk().messages.create(
                model=params["model"],
                max_tokens=params["max_tokens"],
                messages=params["messages"],
                stream=True,
                extra_body=extra,
            )
        except UpstreamError:
            raise
        except Exception as exc:
            raise sdk_error(where, exc) from None
        feed = Feed(_as_dicts(iter(stream)), stream.response, where)
        translator = EventTranslator()
        deadline = time.monotonic() + self.spec.timeouts.first_token
        try:
            while True:
                more, event = feed.next(
                    max(deadline - time.monotonic(), 0.0), "first token", self.spec.timeouts.first_token
                )
                if not more or event is None:
                    if translator.stopped:
                        return _Opened(feed, translator, [])
                    raise UpstreamUnavailable(f"{where}: stream ended before the first token")
                events = translator.feed(event)
                if events or translator.stopped:
                    return _Opened(feed, translator, events)
        except UpstreamError:
            feed.close()
            raise
        except Exception as exc:
            feed.close()
            raise sdk_error(where, exc) from None
        except BaseException:
            feed.close()
            raise

    def stream(self, request: dict[str, Any], max_tokens: int) -> ProviderStream:
        params = to_anthropic_params(
            request, model=self.spec.upstream_model or self.spec.id, max_tokens=max_tokens
        )
        yield from retried_stream(lambda: self._open(params), self.spec, self.slots, self._events)

    def _events(self, opened: _Opened) -> ProviderStream:
        translator = opened.translator
        yield Started(translator.input_tokens, translator.model or self.spec.upstream_model or self.spec.id)
        yield from opened.first
        more = not translator.stopped
        while more:
            try:
                more, event = opened.feed.next(self.spec.timeouts.idle, "token")
            except UpstreamError:
                raise
            except Exception as exc:
                raise sdk_error(f"upstream {self.spec.base_url or 'anthropic'} mid-stream", exc) from None
            if event is not None:
                yield from translator.feed(event)
                more = more and not translator.stopped
        yield translator.finished()
