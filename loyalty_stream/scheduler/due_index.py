"""The due index: which customer must be evaluated when, so idle customers' transitions still happen.

Redis layout (all keys under the deployment's `prefix`):
- `{prefix}due`       sorted set, member `program_id|customer_id`, score = due time in whole epoch seconds
- `{prefix}due:kind`  hash, same member -> "DelayedAccrual" | "PointsExpiry" (which activity to emit)

Scores are the due instant rounded UP to the second: the scheduler's event then never lands a microsecond
before what it must materialise (which would leave the transition pending and re-emit the same event id
forever). The engine stamps ledger entries with the transition's own due time, so the rounding never shows.
The index is a cache of `lifecycle.next_transition` over the customer table: the worker keeps it current after
each apply, and `rebuild_due_index` recreates it from the table.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Protocol, cast

from redis.asyncio import Redis

from loyalty_stream.engine import lifecycle
from loyalty_stream.engine.lifecycle import DueKind
from loyalty_stream.engine.state import CustomerState
from loyalty_stream.program.model import Program

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KINDS: frozenset[str] = frozenset({"DelayedAccrual", "PointsExpiry"})
REBUILD_BATCH = 500


class ProgramLookup(Protocol):
    """What the index needs of a program registry (`ProgramRegistry` fits)."""

    def get(self, program_id: str) -> Program | None: ...


def due_key(prefix: str) -> str:
    return f"{prefix}due"


def kind_key(prefix: str) -> str:
    return f"{prefix}due:kind"


def member(program_id: str, customer_id: str) -> str:
    """`program_id|customer_id`; program ids must not contain '|' (customer ids may)."""
    if "|" in program_id:
        raise ValueError(f"program id {program_id!r} contains '|', which the due index uses as separator")
    return f"{program_id}|{customer_id}"


def split_member(value: str) -> tuple[str, str]:
    program_id, _, customer_id = value.partition("|")
    return program_id, customer_id


def due_score(due: datetime) -> int:
    """Whole epoch seconds, rounded up (see the module docstring)."""
    delta = due - EPOCH
    return delta.days * 86_400 + delta.seconds + (1 if delta.microseconds else 0)


def now_score(now: datetime) -> int:
    """Whole epoch seconds, rounded down: a member is due when its score <= this."""
    delta = now - EPOCH
    return delta.days * 86_400 + delta.seconds


def score_time(score: float | int | str | bytes) -> datetime:
    return EPOCH + timedelta(seconds=int(float(score)))


async def record_due(
    redis: Redis, prefix: str, program_id: str, customer_id: str, due: datetime | None,
    kind: DueKind = "PointsExpiry",
) -> None:
    """Set (or with `due=None` clear) a customer's next due time. Call after every apply with
    `lifecycle.next_transition(state, program)`; `record_state_due` does both steps."""
    name = member(program_id, customer_id)
    async with redis.pipeline(transaction=True) as pipe:
        if due is None:
            pipe.zrem(due_key(prefix), name)
            pipe.hdel(kind_key(prefix), name)
        else:
            pipe.zadd(due_key(prefix), {name: due_score(due)})
            pipe.hset(kind_key(prefix), name, kind)
        await pipe.execute()


async def record_state_due(
    redis: Redis, prefix: str, state: CustomerState, program: Program,
) -> datetime | None:
    """Record the customer's next transition (or clear it); returns its due time."""
    due = lifecycle.next_transition(state, program)
    if due is None:
        await record_due(redis, prefix, state.program_id, state.customer_id, None)
        return None
    await record_due(redis, prefix, state.program_id, state.customer_id, due.at, due.kind)
    return due.at


async def read_due(redis: Redis, prefix: str, program_id: str, customer_id: str
                   ) -> tuple[datetime, DueKind] | None:
    """The recorded due time (to the second) and kind of one customer, if any."""
    name = member(program_id, customer_id)
    score = await redis.zscore(due_key(prefix), name)
    if score is None:
        return None
    kind = await redis.hget(kind_key(prefix), name)
    text = kind.decode() if isinstance(kind, bytes) else kind
    return score_time(score), cast(DueKind, text if text in KINDS else "PointsExpiry")


async def _each(
    states: AsyncIterable[CustomerState] | Iterable[CustomerState],
) -> AsyncIterable[CustomerState]:
    if isinstance(states, AsyncIterable):
        async for state in states:
            yield state
    else:
        for state in states:
            yield state


async def rebuild_due_index(
    redis: Redis,
    prefix: str,
    states: AsyncIterable[CustomerState] | Iterable[CustomerState],
    registry: ProgramLookup,
    *,
    replace: bool = False,
) -> int:
    """Recompute every customer's entry from the customer table; returns how many are due at all.

    Default: upsert (customers with nothing due are removed), safe while workers run. `replace=True` builds
    into scratch keys and swaps them in atomically, also dropping members of customers no longer in the table;
    a worker's update racing with the swap can be lost, so use it with workers stopped.
    """
    target_due, target_kind = due_key(prefix), kind_key(prefix)
    if replace:
        target_due, target_kind = f"{prefix}due:rebuild", f"{prefix}due:kind:rebuild"
        await redis.delete(target_due, target_kind)
    recorded = 0
    pipe = redis.pipeline(transaction=False)
    pending = 0
    async for state in _each(states):
        program = registry.get(state.program_id)
        if program is None:
            continue
        name = member(state.program_id, state.customer_id)
        due = lifecycle.next_transition(state, program)
        if due is None:
            if not replace:
                pipe.zrem(target_due, name)
                pipe.hdel(target_kind, name)
        else:
            pipe.zadd(target_due, {name: due_score(due.at)})
            pipe.hset(target_kind, name, due.kind)
            recorded += 1
        pending += 1
        if pending >= REBUILD_BATCH:
            await pipe.execute()
            pending = 0
    if pending:
        await pipe.execute()
    if replace:
        async with redis.pipeline(transaction=True) as swap:
            swap.delete(due_key(prefix), kind_key(prefix))
            if recorded:
                swap.rename(target_due, due_key(prefix))
                swap.rename(target_kind, kind_key(prefix))
            await swap.execute()
    return recorded
