"""Reads of the read model, for the API: one round trip per call, plain values out.

Nothing here computes what the projection already stored; the only read-time work is the `as_of` filter of
expiration groups (a group whose day has passed is due to expire and no longer upcoming) and the distribution
counts, which Redis answers from the sorted set of balances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
from redis.asyncio import Redis

from loyalty_stream.engine.rounding import normalize
from loyalty_stream.readmodel.distribution import Bucket, buckets_between, redis_range
from loyalty_stream.readmodel.keys import Keys
from loyalty_stream.readmodel.state import CustomerView


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class BucketCount:
    bucket: Bucket
    customers: int


@dataclass(frozen=True, slots=True)
class Distribution:
    program_id: str
    customers: int
    buckets: list[BucketCount]
    percentiles: dict[int, Decimal]
    minimum: Decimal | None
    maximum: Decimal | None


class ReadModel:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def view(self, program_id: str, customer_id: str) -> CustomerView | None:
        """Balances of one customer (lots not loaded); None when the read model has never seen them."""
        bal = await self.redis.hgetall(self.keys.customer(program_id, customer_id).bal)
        if not bal:
            return None
        return CustomerView.from_redis(program_id, customer_id, {_text(k): _text(v) for k, v in bal.items()})

    async def history(self, program_id: str, customer_id: str, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` ledger entries, newest first, each with its `text`."""
        keys = self.keys.customer(program_id, customer_id)
        ids: list[Any] = await self.redis.zrevrange(keys.hist, 0, limit - 1)
        if not ids:
            return []
        payloads = await self.redis.hmget(keys.hist_entries, ids)
        return [orjson.loads(p) for p in payloads if p is not None]

    async def notifications(self, program_id: str, customer_id: str, limit: int) -> list[dict[str, Any]]:
        keys = self.keys.customer(program_id, customer_id)
        ids: list[Any] = await self.redis.zrevrange(keys.ntf, 0, limit - 1)
        if not ids:
            return []
        return [orjson.loads(p) for p in await self.redis.hmget(keys.ntf_entries, ids) if p is not None]

    async def expirations(self, program_id: str, customer_id: str, as_of: date | None = None
                          ) -> list[tuple[date, Decimal]]:
        """Expiration groups (last usable day, points), soonest first, from `as_of` on when given."""
        raw = await self.redis.hgetall(self.keys.customer(program_id, customer_id).exp)
        groups = sorted((date.fromisoformat(_text(k)), Decimal(_text(v))) for k, v in raw.items())
        return [(day, points) for day, points in groups if as_of is None or day >= as_of]

    async def promised(self, program_id: str, customer_id: str) -> list[tuple[datetime | None, str | None, Decimal]]:
        """Promised points by (available at, bill), soonest first."""
        raw = await self.redis.hgetall(self.keys.customer(program_id, customer_id).prm)
        rows = []
        for field, points in raw.items():
            at, _, bill = _text(field).partition("|")
            rows.append((datetime.fromisoformat(at) if at else None, bill or None, Decimal(_text(points))))
        return sorted(rows, key=lambda r: (r[0] is None, r[0].timestamp() if r[0] else 0.0, r[1] or ""))

    async def programs(self) -> list[str]:
        return sorted(_text(p) for p in await self.redis.smembers(self.keys.programs))

    async def distribution(self, program_id: str, edges: list[Decimal],
                           percentiles: tuple[int, ...] = (25, 50, 75, 90, 99)) -> Distribution:
        """Customers per balance bucket (`edges` split the line into [lo, hi) buckets), and percentiles."""
        key = self.keys.distribution(program_id)
        buckets = buckets_between(edges)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zcard(key)
            for bucket in buckets:
                pipe.zcount(key, *redis_range(bucket))
            pipe.zrange(key, 0, 0, withscores=True)
            pipe.zrange(key, -1, -1, withscores=True)
            replies = await pipe.execute()
        total, counts = int(replies[0]), replies[1:1 + len(buckets)]
        low, high = replies[-2], replies[-1]
        ranks = {p: max(0, math.ceil(p / 100 * total) - 1) for p in percentiles}
        values: dict[int, Decimal] = {}
        if total:
            async with self.redis.pipeline(transaction=False) as pipe:
                for rank in ranks.values():
                    pipe.zrange(key, rank, rank, withscores=True)
                answers = await pipe.execute()
            values = {p: _score(answer[0][1]) for p, answer in zip(ranks, answers, strict=True) if answer}
        return Distribution(
            program_id=program_id, customers=total,
            buckets=[BucketCount(b, int(c)) for b, c in zip(buckets, counts, strict=True)],
            percentiles=values, minimum=_score(low[0][1]) if low else None,
            maximum=_score(high[0][1]) if high else None,
        )


def _score(value: float) -> Decimal:
    """Scores are floats; balances have at most a few decimals, so the shortest repr is the exact value."""
    return normalize(Decimal(repr(value)))
