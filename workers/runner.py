"""Runs one stored message: claim it (or resume it), hold its lease, run the loop, record the outcome."""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from shared import events as ev
from shared.ending import Ending, EndKind, StreamSoFar, ending_events
from shared.keys import message_keys
from shared.leases import Leases
from shared.routing import STATEFUL_PROVIDERS
from shared.store import (
    CANCELLED,
    ERROR,
    TERMINAL_STATUSES,
    Claim,
    ClaimOutcome,
    FieldValues,
    MessageStore,
    Signal,
)
from shared.store.cluster import leases_for
from workers import affinity, metrics
from workers.generation import Outcome, SinkUnavailable, resume_generation, run_generation
from workers.providers.base import Resume
from workers.resume import ResumeState, stored_resume_state
from workers.runtime import Runtime
from workers.writer import background_writer

log = logging.getLogger("sluice.worker")


@dataclass(frozen=True)
class BoundSink:
    """A ``MessageStore`` bound to one message and one owner of its lock: the loop's sink."""

    store: MessageStore
    message_id: str
    owner: str = ""
    lease_ms: int = 0
    #: ``SLUICE_REDIS_WAIT_MS``: how long the terminal write waits for a replica (0 = not at all).
    wait_ms: int = 0

    def append(self, events: Sequence[ev.Event], fields: FieldValues | None = None) -> Signal:
        with _unavailable_as_sink_error():
            return self.store.append(
                self.message_id, events, fields, owner=self.owner, lease_ms=self.lease_ms
            )

    def finish(
        self, status: str, events: Sequence[ev.Event], fields: FieldValues | None = None
    ) -> str | None:
        with _unavailable_as_sink_error():
            return self.store.finish(
                self.message_id, status, events, fields, owner=self.owner, wait_ms=self.wait_ms
            )


@dataclass
class _FirstWriteHook:
    """A sink that runs ``hook`` (in the writer thread) before its first write."""

    sink: BoundSink
    hook: Callable[[], None] | None

    def append(self, events: Sequence[ev.Event], fields: FieldValues | None = None) -> Signal:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return self.sink.append(events, fields)

    def finish(
        self, status: str, events: Sequence[ev.Event], fields: FieldValues | None = None
    ) -> str | None:
        return self.sink.finish(status, events, fields)


@contextmanager
def _unavailable_as_sink_error() -> Iterator[None]:
    """Redis unreachable → ``SinkUnavailable``: the run stops and is resumed later, never
    ended as an error because of an outage."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise SinkUnavailable(str(exc)) from exc


@contextmanager
def holding_lease(leases: Leases, message_id: str, owner: str) -> Iterator[None]:
    """Renew ``owner``'s lease every third of its length until the block ends."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(leases.lease_ms / 3000):
            try:
                if not leases.renew(message_id, owner):
                    return  # ended, deleted or taken over: appends are fenced anyway
            except Exception:  # Redis blip: the next round retries before the lease lapses
                log.warning("lease renewal failed", extra={"message_id": message_id})

    thread = threading.Thread(target=renew, name=f"lease-{message_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)


#: How long a claim keeps trying while Redis is unreachable (a Sentinel failover takes seconds).
CLAIM_RETRY_SECONDS = 60.0


def _claim_retrying(claim: Callable[[], Claim]) -> Claim:
    """``claim()``, tried again while Redis cannot be reached: a task that gave up here would
    leave its message pending with no task to run it. Trying again is safe: a claim that did
    run before its reply was lost answers ``locked`` the second time, and the lease it took
    lapses, so the reaper queues the message again."""
    deadline = time.monotonic() + CLAIM_RETRY_SECONDS
    pause = 0.1
    while True:
        try:
            return claim()
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def run_message(runtime: Runtime, message_id: str, *, worker: str, route: str = "") -> str:
    """Run ``message_id`` if pending, resume it if its worker died; returns its final status.
    ``route``: the private queue of the worker holding the conversation (``shared.routing``)."""
    store, settings = runtime.store, runtime.settings
    decision = affinity.wait_for_holder(store, message_id, route, worker, settings.route_wait_ms / 1000)
    leases = leases_for(store, settings.lock_lease_seconds)
    owner = f"{worker}:{os.getpid()}:{secrets.token_hex(4)}"
    claim = _claim_retrying(
        lambda: store.claim(
            message_id,
            worker,
            owner=owner,
            lease_ms=leases.lease_ms,
            max_resumes=settings.max_resumes,
            pid=os.getpid(),
        )
    )
    if not claim.runs:
        log.info("skip", extra={"message_id": message_id, "status": claim.outcome})
        return claim.outcome
    affinity.record_decision(decision)
    sink = BoundSink(store, message_id, owner, leases.lease_ms, settings.redis_wait_ms)
    with holding_lease(leases, message_id, owner):
        if claim.outcome is ClaimOutcome.EXHAUSTED:
            state = stored_resume_state(store.messages, message_id)
            if store.messages.exists(message_keys(message_id).cancel):  # a cancel asked for wins
                return _end_abandoned(sink, state, Ending.cancelled())
            return _give_up(sink, f"its worker was lost more than {settings.max_resumes} times", state)
        outcome = _run_claimed(runtime, sink, claim, worker)
    log.info(
        "finished",
        extra={"message_id": message_id, "status": outcome.status, "output_tokens": outcome.output_tokens},
    )
    return outcome.status


def after_run(runtime: Runtime, message_id: str, status: str) -> int:
    """After a run: the message's batch result and webhook event, then its batch's window is
    topped up at once; returns the webhook deliveries queued. Failures are logged only: the
    feeder's sweep records what this missed."""
    if status not in TERMINAL_STATUSES or runtime.outcomes is None:
        return 0
    try:
        ended = runtime.outcomes.message_ended(message_id)
        if ended.batch_sid:
            runtime.outcomes.batches.feed(ended.batch_sid, runtime.store, runtime.tasks, runtime.registry)
        return ended.deliveries
    except Exception:
        log.warning("after-run bookkeeping failed", extra={"message_id": message_id}, exc_info=True)
        return 0


def _end_abandoned(sink: BoundSink, state: ResumeState, end: Ending) -> str:
    """End a message whose run cannot go on (a cancel asked for while its worker was gone, or a
    run that cannot be resumed) well-formed, after what ``state`` says the stream holds."""
    status = sink.store.get_status(sink.message_id) or {}
    so_far = StreamSoFar(
        sink.message_id,
        status.get("model") or "default",
        state.started,
        state.index if state.open_kind is not None else None,
        output_tokens=int(status.get("output_tokens") or 0),
    )
    final = CANCELLED if end.kind is EndKind.CANCELLED else ERROR
    fields = {"error_message": end.message} if end.kind is EndKind.ERROR else None
    if end.kind is EndKind.ERROR:
        log.warning("gave up", extra={"message_id": sink.message_id, "reason": end.message})
    return sink.finish(final, ending_events(so_far, end), fields) or final


def _give_up(sink: BoundSink, reason: str, state: ResumeState) -> str:
    """End a message whose run cannot go on with a well-formed ``error`` ending."""
    return _end_abandoned(
        sink, state, Ending.error("api_error", f"Generation could not be completed: {reason}.")
    )


def _run_claimed(runtime: Runtime, sink: BoundSink, claim: Claim, worker: str) -> Outcome:
    store, message_id = runtime.store, sink.message_id
    status, request, resumed = claim.status, claim.request, claim.outcome is ClaimOutcome.RESUME
    spec = runtime.registry.resolve(status.get("model", "default"))
    if request is None or spec is None:
        reason = "request expired" if request is None else f"unknown model {status.get('model')!r}"
        so_far = stored_resume_state(store.messages, message_id) if resumed else ResumeState(started=False)
        final = _end_abandoned(sink, so_far, Ending.error("api_error", reason))
        return Outcome(final if final in TERMINAL_STATUSES else ERROR, error_message=reason)
    max_tokens = min(request.get("max_tokens") or spec.default_max_tokens, spec.max_output_tokens)
    provider = runtime.provider_for(spec)
    coalesce = runtime.settings.coalesce_ms / 1000
    state = stored_resume_state(store.messages, message_id) if resumed else None
    if state is None or not state.started:  # nothing was written yet: a plain (re)start
        queue_wait_ms = round((time.time() - float(status.get("created_ts", time.time()))) * 1000, 1)
        stateful = spec.provider in STATEFUL_PROVIDERS
        # Nothing waits for a round trip before the model starts: the queue wait goes out with the
        # first batch, and a stateful worker's busy time from the writer thread before it.
        hook = (lambda: affinity.announce_busy(store, spec.queue, worker, max_tokens)) if stateful else None
        with background_writer(_FirstWriteHook(sink, hook), coalesce) as writer:
            writer.append([], {"queue_wait_ms": queue_wait_ms})
            outcome = run_generation(message_id, request, provider, writer, max_tokens=max_tokens)
        metrics.record(spec.id, status.get("queue") or spec.queue, queue_wait_ms, outcome)
        if stateful:
            affinity.after_run(store, spec.id, spec.queue, worker, request, outcome)
            prefill = getattr(provider, "last_prefill", None)
            if prefill is not None:
                metrics.record_prefill(spec.id, prefill)
        return outcome
    if not state.resumable or not hasattr(provider, "resume_stream"):
        reason = state.reason or f"provider {spec.provider!r} cannot resume"
        final = _give_up(sink, f"its worker was lost mid-generation and {reason}", state)
        return Outcome(final if final in TERMINAL_STATUSES else ERROR, error_message=reason)
    log.info("resume", extra={"message_id": message_id, "chars": len(state.text)})
    ttft = status.get("ttft_ms")
    with background_writer(sink, coalesce) as writer:
        outcome = resume_generation(
            message_id,
            request,
            provider,  # type: ignore[arg-type]  # checked by hasattr just above
            writer,
            max_tokens=max_tokens,
            resume=Resume(state.text, int(status.get("output_tokens") or 0)),
            open_index=state.index,
            text_open=state.open_kind == "text",
            ttft_ms=float(ttft) if ttft else None,
        )
    queue_wait_ms = float(status.get("queue_wait_ms") or 0)
    metrics.record(spec.id, status.get("queue") or spec.queue, queue_wait_ms, outcome)
    return outcome
