"""The projection's loop keeps a batch while Redis is away, and gives it up only when told to stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from loyalty_stream.readmodel.projection import Projection, Record, Stats
from loyalty_stream.settings import Settings


async def test_a_batch_is_retried_while_redis_is_away_and_dropped_unwritten_on_stop() -> None:
    redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    projection = Projection(Settings(topic_prefix="t-"), redis)
    attempts: list[list[Record]] = []
    write = projection.apply

    async def counted(records: Sequence[Record]) -> Stats:
        attempts.append(records)
        return await write(records)

    projection.apply = counted  # type: ignore[method-assign]
    batch = [Record("t-ledger", 0, 0, b"{}")]
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    started = time.monotonic()
    try:
        done = await projection._apply_until_done(batch, stop)
    finally:
        await redis.aclose()
    assert done is False and projection.totals.records == 0
    # Retried (0 s, 0.2 s, 0.6 s backoff) with the same batch until the stop, not given up at the first error.
    assert len(attempts) >= 2 and all(a is batch for a in attempts)
    assert time.monotonic() - started >= 0.45
