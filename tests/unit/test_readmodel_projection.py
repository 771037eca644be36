"""The projection's loop keeps a batch while Redis is away, and gives it up only when told to stop."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from loyalty_stream.readmodel.projection import Projection, Record
from loyalty_stream.settings import Settings


async def test_a_batch_is_retried_while_redis_is_away_and_dropped_unwritten_on_stop() -> None:
    redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    projection = Projection(Settings(topic_prefix="t-"), redis)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    try:
        done = await projection._apply_until_done([Record("t-ledger", 0, 0, b"{}")], stop)
    finally:
        await redis.aclose()
    assert done is False and projection.totals.records == 0
