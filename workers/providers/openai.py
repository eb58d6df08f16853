"""The ``openai`` provider: any OpenAI-compatible chat-completions server, streamed over httpx.

vLLM, llama.cpp's server, Ollama, TGI, LiteLLM and OpenAI itself all speak this API.
Failures before the first token are retried (``ModelSpec.retry``); after it they end the
stream with an error. Closing the generator closes the upstream connection at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.models import ModelSpec
from shared.outbound import UrlRefused, check_resolved
from shared.settings import SharedSettings
from workers.providers.base import Finished, ProviderError, ProviderEvent, ProviderStream, Started
from workers.providers.openai_translate import ChunkTranslator, to_openai_request
from workers.providers.upstream import (
    Feed,
    UpstreamProtocolError,
    UpstreamUnavailable,
    api_key,
    http_client,
    retried_stream,
    status_error,
)


def sse_data(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON payloads of an SSE stream's ``data:`` lines, until ``[DONE]``."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if not data:
            continue
        try:
            yield json.loads(data)
        except ValueError:
            raise UpstreamProtocolError(f"upstream sent a chunk that is not JSON: {data[:200]!r}") from None


def check_image_urls(body: dict[str, Any], *, allow_private: bool = False) -> None:
    """Refuse (``ProviderError``) an ``image_url`` whose host resolves to a private address: the
    upstream would fetch it from inside our network. ``data:`` URLs are not fetched."""
    for message in body.get("messages") or ():
        content = message.get("content")
        for part in content if isinstance(content, list) else ():
            url = str((part.get("image_url") or {}).get("url", "")) if isinstance(part, dict) else ""
            if not url or url.startswith("data:"):
                continue
            try:
                check_resolved(url, allow_private=allow_private)
            except UrlRefused as exc:
                raise ProviderError(f"image url refused by the outbound URL policy: {exc}") from None


@dataclass
class _Opened:
    """An upstream stream that has produced its first events (or ended)."""

    feed: Feed[dict[str, Any]]
    translator: ChunkTranslator
    first: list[ProviderEvent]
    ended: bool


@dataclass
class OpenAIProvider:
    """Streams from ``{base_url}/chat/completions`` for the model ``spec``."""

    spec: ModelSpec
    client: httpx.Client
    slots: threading.BoundedSemaphore | None = None
    # SLUICE_UPSTREAM_ALLOW_PRIVATE_URLS, from the worker's settings when the provider is built.
    allow_private_urls: bool = False
    _url: str = field(init=False)

    def __post_init__(self) -> None:
        self._url = str(self.spec.base_url).rstrip("/") + "/chat/completions"

    @classmethod
    def from_spec(cls, spec: ModelSpec, settings: SharedSettings | None = None) -> OpenAIProvider:
        slots = threading.BoundedSemaphore(spec.concurrency) if spec.concurrency else None
        allow = settings.upstream_allow_private_urls if settings is not None else False
        return cls(spec=spec, client=http_client(spec), slots=slots, allow_private_urls=allow)

    def _headers(self) -> dict[str, str]:
        headers = {"accept": "text/event-stream", **dict(self.spec.options.get("headers") or {})}
        key = api_key(self.spec)
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    def _open(self, body: dict[str, Any]) -> _Opened:
        """POST the request and read until the first event: everything a retry may repeat."""
        where = f"upstream {self._url}"
        try:
            request = self.client.build_request("POST", self._url, json=body, headers=self._headers())
            response = self.client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(f"{where}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            try:
                text = response.read().decode(errors="replace")
            except httpx.HTTPError:
                text = ""
            finally:
                response.close()
            raise status_error(where, response.status_code, response.headers, text)
        feed = Feed(sse_data(response.iter_lines()), response, where)
        translator = ChunkTranslator()
        deadline = time.monotonic() + self.spec.timeouts.first_token
        try:
            while True:
                more, chunk = feed.next(
                    max(deadline - time.monotonic(), 0.0), "first token", self.spec.timeouts.first_token
                )
                if not more or chunk is None:
                    if translator.finish_reason is None:
                        raise UpstreamUnavailable(f"{where}: stream ended before the first token")
                    return _Opened(feed, translator, [], ended=True)
                events = translator.feed(chunk)
                if events:
                    return _Opened(feed, translator, events, ended=False)
        except httpx.TransportError as exc:
            feed.close()
            raise UpstreamUnavailable(f"{where}: connection lost before the first token: {exc}") from None
        except BaseException:
            feed.close()
            raise

    def stream(self, request: dict[str, Any], max_tokens: int) -> ProviderStream:
        body = to_openai_request(
            request,
            model=self.spec.upstream_model or self.spec.id,
            max_tokens=max_tokens,
            options=dict(self.spec.options),
        )
        check_image_urls(body, allow_private=self.allow_private_urls)
        yield from retried_stream(lambda: self._open(body), self.spec, self.slots, self._events)

    def _events(self, opened: _Opened) -> ProviderStream:
        translator = opened.translator
        yield Started(
            input_tokens=translator.input_tokens or 0,
            model=translator.model or self.spec.upstream_model or self.spec.id,
        )
        yield from opened.first
        idle = self.spec.timeouts.idle
        more = not opened.ended
        while more:
            try:
                more, chunk = opened.feed.next(idle, "token")
            except httpx.TransportError as exc:
                raise ProviderError(f"upstream {self._url}: connection lost mid-stream: {exc}") from None
            if chunk is not None:
                yield from translator.feed(chunk)
        if translator.finish_reason is None:
            raise ProviderError(f"upstream {self._url}: stream ended without a finish_reason (cut off)")
        finished: Finished = translator.finished()
        yield finished
