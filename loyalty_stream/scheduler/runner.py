"""The scheduler's leader task: pop customers whose due time has come and publish their due activity.

One scheduler runs per cluster: leadership is a Redis lock (`SET key token NX PX ttl`), renewed on every tick
and released on stop, so replicas stand by and take over within one TTL when the leader dies. Emitting twice
(a leader change mid-tick, a retried send) is harmless: the event id is derived from customer, due time and
kind, so the engine drops the repeat as a duplicate, and a due event with nothing left to do is a no-op.

This is the only place that reads a clock, and it is injected: `run(clock, interval)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, cast

from redis.asyncio import Redis

from loyalty_stream.engine.ids import derive_id
from loyalty_stream.engine.lifecycle import DueKind, due_activity
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.scheduler.due_index import KINDS, due_key, kind_key, now_score, score_time, split_member

log = logging.getLogger(__name__)

Send = Callable[[str, bytes, bytes], Awaitable[Any]]
"""send(logical topic name, key = customer id bytes, value = activity JSON bytes)."""

SCHEDULER_TOPIC = "delayed-accrual"
TOPIC_OF_KIND: Mapping[DueKind, str] = {"DelayedAccrual": SCHEDULER_TOPIC, "PointsExpiry": SCHEDULER_TOPIC}

_POP = """
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1],
                        'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i = 1, #rows, 2 do
  local name = rows[i]
  local kind = redis.call('HGET', KEYS[2], name)
  redis.call('ZREM', KEYS[1], name)
  redis.call('HDEL', KEYS[2], name)
  out[#out + 1] = name
  out[#out + 1] = rows[i + 1]
  out[#out + 1] = kind or ''
end
return out
"""
"""Atomically take up to ARGV[2] members due at or before ARGV[1] with their kinds."""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lock_key(prefix: str) -> str:
    return f"{prefix}scheduler:leader"


def scheduled_event_id(program_id: str, customer_id: str, due: datetime, kind: str) -> str:
    """Same customer, due time and kind -> same id, whichever replica emits it, however often."""
    return derive_id("due", program_id, customer_id, due.isoformat(), kind)


def due_event(program_id: str, customer_id: str, due: datetime, kind: DueKind) -> Envelope:
    """The activity the scheduler publishes: `event_time` is the due time, its id is deterministic."""
    event_id = scheduled_event_id(program_id, customer_id, due, kind)
    return due_activity(program_id, customer_id, due, kind, event_id)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Scheduler:
    """Pops due customers from the index and publishes their DelayedAccrual / PointsExpiry activity."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        send: Send,
        *,
        lock_ttl_ms: int = 30_000,
        batch_size: int = 500,
        topics: Mapping[DueKind, str] = TOPIC_OF_KIND,
        token: str | None = None,
    ) -> None:
        if lock_ttl_ms <= 0 or batch_size <= 0:
            raise ValueError("lock_ttl_ms and batch_size must be positive")
        self.redis = redis
        self.prefix = prefix
        self.send = send
        self.lock_ttl_ms = lock_ttl_ms
        self.batch_size = batch_size
        self.topics = topics
        self.token = token or secrets.token_hex(16)
        self.leader = False
        self._stopping = asyncio.Event()

    # Leadership --------------------------------------------------------------------------------------
    async def lead(self) -> bool:
        """Renew the lock if held, else try to take it; True while this instance is the leader."""
        key = lock_key(self.prefix)
        if self.leader:
            renewed = await self.redis.eval(_RENEW, 1, key, self.token, self.lock_ttl_ms)
            if renewed:
                return True
            self.leader = False
            log.warning("scheduler %s lost leadership", self.token)
        acquired = await self.redis.set(key, self.token, nx=True, px=self.lock_ttl_ms)
        self.leader = bool(acquired)
        if self.leader:
            log.info("scheduler %s is the leader", self.token)
        return self.leader

    async def release(self) -> None:
        """Give up leadership (only if this instance still holds the lock)."""
        if self.leader:
            await self.redis.eval(_RELEASE, 1, lock_key(self.prefix), self.token)
            self.leader = False

    # Work ----------------------------------------------------------------------------------------------
    async def tick(self, now: datetime) -> int:
        """As leader, publish a due activity for every customer due at or before `now`; returns how many."""
        if not await self.lead():
            return 0
        emitted = 0
        keys = (due_key(self.prefix), kind_key(self.prefix))
        while True:
            rows = await cast(Awaitable[list[Any]], self.redis.eval(
                _POP, 2, *keys, now_score(now), self.batch_size))
            batch = [(_text(rows[i]), _text(rows[i + 1]), _text(rows[i + 2])) for i in range(0, len(rows), 3)]
            for index, (name, score, kind) in enumerate(batch):
                try:
                    await self._emit(name, score_time(score), kind)
                except BaseException:
                    await self._restore(batch[index:])
                    raise
                emitted += 1
            if len(batch) < self.batch_size or not await self.lead():
                return emitted

    async def _emit(self, name: str, due: datetime, kind_text: str) -> None:
        program_id, customer_id = split_member(name)
        kind = cast(DueKind, kind_text if kind_text in KINDS else "PointsExpiry")
        event = due_event(program_id, customer_id, due, kind)
        await self.send(self.topics[kind], customer_id.encode(), event.model_dump_json().encode())

    async def _restore(self, rows: list[tuple[str, str, str]]) -> None:
        """Put back what was popped but not sent, unless a worker has recorded something newer meanwhile."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for name, score, kind in rows:
                pipe.zadd(due_key(self.prefix), {name: float(score)}, nx=True)
                pipe.hsetnx(kind_key(self.prefix), name, kind or "PointsExpiry")
            await pipe.execute()

    async def run(self, clock: Callable[[], datetime], interval: float) -> None:
        """Tick every `interval` seconds until `stop()`; a failing tick is logged and retried next time."""
        self._stopping.clear()
        try:
            while not self._stopping.is_set():
                try:
                    emitted = await self.tick(clock())
                    if emitted:
                        log.info("scheduler emitted %d due events", emitted)
                except Exception:
                    log.exception("scheduler tick failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), interval)
        finally:
            await self.release()

    async def stop(self) -> None:
        """Stop `run` after its current tick and release leadership."""
        self._stopping.set()
        await self.release()
