"""What every upstream provider shares: its errors, retries, deadlines and a closable feed.

Errors (all ``ProviderError``, so the generation loop ends the stream with an ``error`` event)::

    UpstreamError                 retryable is False unless said
    ├── UpstreamUnavailable       cannot connect, or the connection dropped before the first token (retryable)
    ├── UpstreamStatusError       a non-2xx answer; 5xx and 429 are retryable, 429 honours Retry-After
    ├── UpstreamTimeout           no first token, or no next token, within the model's timeouts
    └── UpstreamProtocolError     the upstream sent something that is not its protocol

A ``Feed`` reads an upstream response on a thread of its own, so the provider can wait for
each item with a deadline (first token, then idle) and close the connection at once, even
while a read is blocked: cancellation reaches the upstream as a closed socket.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import os
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar

import httpx

from shared.models import ModelSpec, RetryPolicy
from workers.providers.base import ProviderError, ProviderEvent, wait_cancellable

log = logging.getLogger("sluice.upstream")

T = TypeVar("T")

_STATUS_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class UpstreamError(ProviderError):
    """The upstream failed; ``retryable`` says whether trying again before the first token may help."""

    retryable = False
    retry_after: float | None = None


class UpstreamUnavailable(UpstreamError):
    """The upstream cannot be reached, or hung up before the first token."""

    retryable = True
    error_type = "api_error"


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an HTTP error status."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.retryable = status == 429 or status >= 500
        self.error_type = _STATUS_ERROR_TYPES.get(status, "api_error")


class UpstreamTimeout(UpstreamError):
    """The upstream was too slow: for the first token, or between two tokens."""

    error_type = "api_error"


class UpstreamProtocolError(UpstreamError):
    """The upstream's answer does not parse as its protocol."""


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the upstream asks us to wait (``retry-after-ms``, ``Retry-After`` seconds or date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        with contextlib.suppress(ValueError):
            return max(float(raw_ms) / 1000, 0.0)
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(raw).timestamp()
        return max(when - (time.time() if now is None else now), 0.0)
    return None


def status_error(where: str, status: int, headers: Mapping[str, str], text: str) -> UpstreamStatusError:
    """The error for an HTTP error answer, with the upstream's own message when it gave one."""
    detail = " ".join(text.split())[:500] or httpx.codes.get_reason_phrase(status)
    return UpstreamStatusError(status, f"{where} answered {status}: {detail}", parse_retry_after(headers))


def api_key(spec: ModelSpec) -> str | None:
    """The upstream key from the worker's environment variable ``spec.api_key_env`` (never logged)."""
    if not spec.api_key_env:
        return None
    key = os.environ.get(spec.api_key_env)
    if not key:
        raise UpstreamError(f"model {spec.id!r}: environment variable {spec.api_key_env} is not set")
    return key


def http_client(spec: ModelSpec) -> httpx.Client:
    """An HTTP client with the model's connect timeout; reads are bounded by the feed's deadlines."""
    timeouts = spec.timeouts
    longest = max(timeouts.first_token, timeouts.idle)
    # The socket read timeout is only a backstop: Feed enforces first-token and idle deadlines.
    timeout = httpx.Timeout(connect=timeouts.connect, read=longest + 5, write=timeouts.connect, pool=None)
    return httpx.Client(timeout=timeout, limits=httpx.Limits(max_keepalive_connections=8))


def with_retries(
    open_once: Callable[[], T],
    policy: RetryPolicy,
    what: str,
    sleep: Callable[[float], Any] = wait_cancellable,
) -> T:
    """``open_once()``, retried on retryable ``UpstreamError`` as ``policy`` allows."""
    retry = 0
    while True:
        try:
            return open_once()
        except UpstreamError as exc:
            delay = policy.delay(retry, exc.retry_after) if exc.retryable else None
            if delay is None:
                if retry:
                    exc.args = (f"{exc} (after {retry + 1} attempts)",)
                raise
            if exc.retry_after is None:  # the upstream's own Retry-After is kept exactly
                delay *= 1 - policy.jitter * random.random()
            log.warning(
                "upstream retry",
                extra={"model": what, "retry": retry + 1, "delay_s": delay, "reason": str(exc)},
            )
            sleep(delay)
            retry += 1


def is_transport_error(exc: BaseException) -> bool:
    """A network failure of httpx, or of the httpx fork the Anthropic SDK ships with."""
    return any(cls.__name__ == "TransportError" for cls in type(exc).__mro__)


def acquire_slot(slots: threading.BoundedSemaphore | None) -> None:
    """Wait for a free request slot of a model with a concurrency limit (cancellable)."""
    if slots is not None:
        wait_cancellable(float("inf"), lambda step: slots.acquire(timeout=step))


class Opened(Protocol):
    """A response opened up to its first event: what ``retried_stream`` streams from."""

    feed: Feed[Any]


OpenedT = TypeVar("OpenedT", bound=Opened)


def retried_stream(
    open_once: Callable[[], OpenedT],
    spec: ModelSpec,
    slots: threading.BoundedSemaphore | None,
    events: Callable[[OpenedT], Iterator[ProviderEvent]],
) -> Iterator[ProviderEvent]:
    """The provider events of one upstream call: a concurrency slot held throughout, the
    opening retried as ``spec.retry`` allows, the connection closed however the stream ends."""
    acquire_slot(slots)
    try:
        opened = with_retries(open_once, spec.retry, spec.id)
        try:
            yield from events(opened)
        finally:
            opened.feed.close()
    finally:
        if slots is not None:
            slots.release()


def response_socket(response: Any) -> socket.socket | None:
    """The socket under a streaming response, to shut it down from another thread."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    return sock if isinstance(sock, socket.socket) else None


_ITEM, _END, _FAIL = 0, 1, 2


class Feed(Generic[T]):
    """Items of an upstream response, read on a thread; ``next`` waits with a deadline.

    ``close`` shuts the socket down (which wakes a blocked read and tells the upstream to
    stop), waits briefly for the reader, then closes the response.
    """

    def __init__(self, items: Iterator[T], response: Any, what: str) -> None:
        self._items = items
        self._response = response
        self._what = what
        self._queue: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._pump, name="sluice-upstream-feed", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for item in self._items:
                self._queue.put((_ITEM, item))
                if self._closed.is_set():
                    return
            self._queue.put((_END, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            self._queue.put((_FAIL, exc))

    def next(self, timeout: float, waiting_for: str, limit: float | None = None) -> tuple[bool, T | None]:
        """``(True, item)``, or ``(False, None)`` at the end; raises on failure or after ``timeout`` s.

        ``limit`` is the configured timeout the message names, when ``timeout`` is what is left of it.
        """
        got: list[tuple[int, Any]] = []

        def ready(step: float) -> bool:
            with contextlib.suppress(queue.Empty):
                got.append(self._queue.get(timeout=step))
            return bool(got)

        if not wait_cancellable(timeout, ready):  # a cancel meanwhile raises Cancelled
            waited = timeout if limit is None else limit
            raise UpstreamTimeout(f"{self._what}: no {waiting_for} within {waited:g}s")
        kind, value = got[0]
        if kind == _FAIL:
            raise value
        self._ended = kind == _END
        return (True, value) if kind == _ITEM else (False, None)

    def close(self) -> None:
        """Close the upstream connection now."""
        if self._closed.is_set():
            return
        self._closed.set()
        sock = None if self._ended else response_socket(self._response)
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed by the peer
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=2)
        with contextlib.suppress(Exception):  # the reader may have failed mid-read; closing is best effort
            self._response.close()
