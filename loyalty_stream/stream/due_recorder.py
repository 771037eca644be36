"""Keeps the scheduler's due index current from the worker without a Redis round trip per event.

After each apply the worker notes the customer's next transition (pure CPU); a timer flushes the notes in
one pipeline. A crash between apply and flush loses only index entries, which `rebuild` recreates from the
customer table at start — the index is a cache, never the source of truth.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from redis.asyncio import Redis

from loyalty_stream.engine import lifecycle
from loyalty_stream.engine.state import CustomerState
from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.scheduler import rebuild_due_index
from loyalty_stream.scheduler.due_index import due_key, due_score, kind_key, member

log = logging.getLogger(__name__)


Due = tuple[int, str] | None
"""A customer's next transition as the index keeps it: (score, kind), or None when nothing is due."""


def due_of(registry: ProgramRegistry, state: CustomerState) -> tuple[str, Due] | None:
    """The customer's index member and next transition (None: the program is unknown). Pure: the engine
    process computes it beside the engine, and the worker records it (`DueRecorder.record`)."""
    program = registry.get(state.program_id)
    if program is None:
        return None
    due = lifecycle.next_transition(state, program)
    return member(state.program_id, state.customer_id), None if due is None else (due_score(due.at), due.kind)


class DueRecorder:
    def __init__(self, redis: Redis, prefix: str, registry: ProgramRegistry) -> None:
        self.redis = redis
        self.prefix = prefix
        self.registry = registry
        self.pending: dict[str, Due] = {}

    def note(self, state: CustomerState) -> None:
        found = due_of(self.registry, state)
        if found is not None:
            self.pending[found[0]] = found[1]

    def record(self, name: str, due: Due) -> None:
        """What `note` records, computed elsewhere (`due_of`)."""
        self.pending[name] = due

    async def flush(self) -> int:
        if not self.pending:
            return 0
        pending, self.pending = self.pending, {}
        # One multi-member command per kind of change, not one per customer: redis-py spends more CPU
        # building a command than Redis spends running it.
        scores = {name: due[0] for name, due in pending.items() if due is not None}
        gone = [name for name, due in pending.items() if due is None]
        pipe = self.redis.pipeline(transaction=False)
        zkey, hkey = due_key(self.prefix), kind_key(self.prefix)
        if scores:
            pipe.zadd(zkey, scores)
            pipe.hset(hkey, mapping={name: due[1] for name, due in pending.items() if due is not None})
        if gone:
            pipe.zrem(zkey, *gone)
            pipe.hdel(hkey, *gone)
        try:
            await pipe.execute()
        except Exception:
            for name, due in pending.items():  # keep what failed for the next flush, unless superseded
                self.pending.setdefault(name, due)
            raise
        return len(pending)

    async def rebuild(self, states: Iterable[CustomerState]) -> int:
        return await rebuild_due_index(self.redis, self.prefix, states, self.registry)
