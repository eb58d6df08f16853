"""The Lua scripts of Message Batches, as named-argument wrappers (``ScriptCall``) with typed results.

``BatchStore`` (``batches.py``) runs ``RecordScript`` and ``StopScript``, its feeding
(``batch_feed.py``) ``AdvanceScript``; both through the store's ``Scripts`` runner. The two
scripts that may complete a batch share ``END_IF_DONE`` (their prelude) and the keys and
arguments it needs (``BatchEndScript``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from shared.batch_model import ENDED
from shared.keys import BATCHES_ACTIVE, batch_keys
from shared.store.script import ScriptCall, key, tail

R = TypeVar("R")

#: Ends a batch whose every request is counted (once): ``ended``, ``ended_at``, out of the
#: active set, and every key of the batch (the varargs) expires after ``retention`` seconds.
#: True if it ended the batch now.
END_IF_DONE = """
local function end_if_done(meta_key, active_key, batch_sid, now, retention, ...)
  local total, done = unpack(redis.call('HMGET', meta_key, 'total', 'done'))
  if tonumber(done) < tonumber(total) or redis.call('HGET', meta_key, 'status') == 'ended' then
    return false
  end
  redis.call('HSET', meta_key, 'status', 'ended', 'ended_at', now)
  redis.call('ZREM', active_key, batch_sid)
  for _, batch_key in ipairs({...}) do redis.call('EXPIRE', batch_key, retention) end
  return true
end
"""


@dataclass(frozen=True, kw_only=True)
class BatchEndScript(ScriptCall[R]):
    """The keys and arguments of a script that may end a batch (``END_IF_DONE``): every key of
    the batch, the active set, the time now, the retention and the batch's storage id."""

    meta_key: str = key()
    results_key: str = key()
    inflight_key: str = key()
    active_key: str = key()
    requests_key: str = key()
    custom_ids_key: str = key()
    now: str
    retention: int
    batch_sid: str

    PRELUDE = END_IF_DONE

    @staticmethod
    def batch(sid: str) -> dict[str, Any]:
        """The key fields of the batch ``sid`` (all of ``BatchKeys.all()`` and the active set)."""
        keys = batch_keys(sid)
        return {
            "meta_key": keys.meta,
            "results_key": keys.results,
            "inflight_key": keys.inflight,
            "active_key": BATCHES_ACTIVE,
            "requests_key": keys.requests,
            "custom_ids_key": keys.custom_ids,
            "batch_sid": sid,
        }


#: How a script calls ``end_if_done`` with the fields of ``BatchEndScript``.
_END_IF_DONE_CALL = (
    "end_if_done(meta_key, active_key, batch_sid, now, retention, "
    "meta_key, requests_key, custom_ids_key, inflight_key, results_key)"
)


class Recorded(StrEnum):
    """What recording a batch message's end did."""

    #: Recorded before (by the worker, the API or the feeder's sweep): nothing changed.
    ALREADY = "already"
    #: Counted; the batch goes on.
    RECORDED = "recorded"
    #: Counted, and it was the last one: the batch ended now.
    ENDED = "ended"


@dataclass(frozen=True, kw_only=True)
class RecordScript(BatchEndScript[Recorded]):
    """Record the end of one of the batch's messages, once (its ``SREM`` from the in-flight set
    is the token): its result line in the results hash, its kind counted; a ``canceled`` end
    of an expiring batch counts as ``expired`` (with ``expired_line``)."""

    message_sid: str
    index: int
    kind: str
    line: str
    expired_line: str

    BODY = f"""
if redis.call('SREM', inflight_key, message_sid) == 0 then return 'already' end
if kind == 'canceled' and redis.call('HGET', meta_key, 'ending') == 'expired' then
  kind, line = 'expired', expired_line
end
redis.call('HSET', results_key, index, line)
local ttl = redis.call('TTL', meta_key)
if ttl > 0 then redis.call('EXPIRE', results_key, ttl) end
redis.call('HINCRBY', meta_key, kind, 1)
redis.call('HINCRBY', meta_key, 'done', 1)
if {_END_IF_DONE_CALL} then return 'ended' end
return 'recorded'
"""

    def parse(self, reply: Any) -> Recorded:
        """What the record did."""
        return Recorded(reply)


@dataclass(frozen=True)
class Stopped:
    """A batch whose feed was stopped now."""

    #: The batch's status afterwards: ``ended`` when nothing was in flight, else the stop's status.
    status: str
    #: Storage ids of its messages fed and not yet recorded, sorted: the caller cancels them.
    inflight: tuple[str, ...]

    @property
    def ended(self) -> bool:
        """Whether the stop ended the batch (every request is counted)."""
        return self.status == ENDED


@dataclass(frozen=True, kw_only=True)
class StopScript(BatchEndScript[Stopped | None]):
    """Stop the feed: every request not yet fed counts as ``ending`` (``canceled`` or
    ``expired``) at once; the batch takes ``new_status``. Nil when it was not in progress."""

    ending: str
    new_status: str

    BODY = f"""
local status, stopped = unpack(redis.call('HMGET', meta_key, 'status', 'ending'))
if status ~= 'in_progress' or stopped then return false end
local total, fed = unpack(redis.call('HMGET', meta_key, 'total', 'fed'))
local unfed = tonumber(total) - tonumber(fed)
redis.call('HSET', meta_key, 'status', new_status, 'ending', ending, 'unfed_from', fed, 'fed', total)
if ending == 'canceled' then redis.call('HSET', meta_key, 'cancel_initiated_at', now) end
redis.call('HINCRBY', meta_key, ending, unfed)
redis.call('HINCRBY', meta_key, 'done', unfed)
local after = {_END_IF_DONE_CALL} and 'ended' or new_status
return {{after, unpack(redis.call('SMEMBERS', inflight_key))}}
"""

    def parse(self, reply: Any) -> Stopped | None:
        """The batch's status and its messages in flight (None: it was not in progress)."""
        if not reply:
            return None
        return Stopped(str(reply[0]), tuple(sorted(str(m) for m in reply[1:])))


class Advance(StrEnum):
    """What moving a batch's feed cursor did."""

    #: Moved; the messages are in flight.
    ADVANCED = "advanced"
    #: Someone else fed the batch meanwhile (the same messages, counted by them).
    OVERTAKEN = "overtaken"
    #: The batch is no longer in progress (cancelled or expired): nobody counts these messages.
    STOPPED = "stopped"


@dataclass(frozen=True, kw_only=True)
class AdvanceScript(ScriptCall[Advance]):
    """Move the feed cursor from ``expected_fed`` to ``new_fed`` and put the messages created
    for it in flight, if nobody else fed the batch and it still runs."""

    meta_key: str = key()
    inflight_key: str = key()
    expected_fed: int
    new_fed: int
    message_sids: tuple[str, ...] = tail()

    BODY = """
local status, fed = unpack(redis.call('HMGET', meta_key, 'status', 'fed'))
if status ~= 'in_progress' then return 'stopped' end
if tonumber(fed) ~= expected_fed then return 'overtaken' end
redis.call('HSET', meta_key, 'fed', new_fed)
if #ARGV >= message_sids_from then
  redis.call('SADD', inflight_key, unpack(ARGV, message_sids_from))
  local ttl = redis.call('TTL', meta_key)
  if ttl > 0 then redis.call('EXPIRE', inflight_key, ttl) end
end
return 'advanced'
"""

    def parse(self, reply: Any) -> Advance:
        """What the advance did."""
        return Advance(reply)


BATCH_SCRIPTS: tuple[type[ScriptCall[Any]], ...] = (RecordScript, StopScript, AdvanceScript)
