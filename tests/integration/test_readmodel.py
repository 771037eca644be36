"""The Redis projection behind a real worker, broker and Redis: balances, history, expiration groups and the
distribution come out right, and duplicates, a lost position or a rebuild change nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from loyalty_stream.readmodel.keys import Keys
from loyalty_stream.readmodel.projection import Projection
from loyalty_stream.readmodel.reader import ReadModel
from loyalty_stream.readmodel.state import CustomerView
from loyalty_stream.settings import Settings
from tests.fixtures.cluster import consume_until, produce_many

from .harness import activity, dec, live_worker, program

pytestmark = pytest.mark.integration

T = TypeVar("T")
OUTPUTS = ("ledger", "balance-changes", "tier-changes", "notifications")

PROGRAM = program(
    id="rm", timezone="Europe/London", rounding={"decimals": 0},
    tiers=[{"name": "bronze", "threshold": 0}, {"name": "silver", "threshold": 150}],
    earn_conditions=[{"code": "PCT", "allocation": {"type": "prorated", "percent": 10}, "expiry": "D30"},
                     {"code": "WELCOME", "allocation": {"type": "fixed", "points": 100}, "expiry": "D30"}],
    expiry_conditions=[{"code": "D30", "unit": "days", "value": 30}],
    rule_sets={
        "TransactionAdd": [{"name": "earn", "rules": [
            {"name": "pct", "actions": [{"type": "allocate", "condition": "PCT"}]}]}],
        "Registration": [{"name": "welcome", "rules": [
            {"name": "bonus", "actions": [{"type": "allocate", "condition": "WELCOME"},
                                          {"type": "notify", "channel": "email", "template": "welcome"}]}]}],
        "PointsRedemption": [{"name": "redeem", "rules": [{"name": "any", "actions": [{"type": "redeem"}]}]}],
    },
)

STORY = (
    activity("Registration", "reg-alice", "alice", "2026-03-01T10:00:00Z", program_id="rm"),  # 100, through 31 Mar
    activity("Registration", "reg-bob", "bob", "2026-03-01T11:00:00Z", program_id="rm"),
)
PURCHASES = (
    activity("TransactionAdd", "t-1", "alice", "2026-03-05T10:00:00Z", program_id="rm", bill_number="B-1",
             amount="500"),  # 50, usable through 4 Apr
    activity("TransactionAdd", "t-2", "alice", "2026-03-20T10:00:00Z", program_id="rm", bill_number="B-2",
             amount="300"),  # 30, through 19 Apr; lifetime 180: silver
)
# Soonest expiry first: all 100 of the welcome lot, then 20 of B-1's.
REDEMPTION = activity("PointsRedemption", "r-1", "alice", "2026-03-21T10:00:00Z", program_id="rm", points="120")


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 20.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or probe}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_projection(settings: Settings, redis: Redis) -> AsyncIterator[Projection]:
    projection = Projection(settings, redis)
    stop = asyncio.Event()
    task = asyncio.create_task(projection.run(stop))
    try:
        await asyncio.wait_for(projection.assigned.wait(), 30)
        yield projection
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def snapshot(redis: Redis, keys: Keys, *, skip_offsets: bool = True) -> dict[str, Any]:
    """Every read-model key with its type and content."""
    found: dict[str, Any] = {}
    async for raw in redis.scan_iter(match=keys.pattern, count=1000):
        key = raw.decode()
        if skip_offsets and key == keys.offsets:
            continue
        kind = (await redis.type(raw)).decode()
        if kind == "hash":
            value: Any = sorted((await redis.hgetall(raw)).items())
        elif kind == "zset":
            value = await redis.zrange(raw, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(await redis.smembers(raw))
        else:
            value = await redis.get(raw)
        found[key] = (kind, value)
    return found


async def caught_up(reader: ReadModel, customer: str, seq: int, tier: str | None = None) -> CustomerView | None:
    view = await reader.view("rm", customer)
    if view is None or view.seq < seq or view.change_seq != seq or (tier is not None and view.tier != tier):
        return None
    return view


async def test_projection_shows_the_story_and_replays_change_nothing(
        loyalty_settings: Settings, catalogue_topics: dict[str, str], redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    keys = Keys.for_prefixes(loyalty_settings.redis_prefix, loyalty_settings.topic_prefix)
    reader = ReadModel(redis, keys)
    try:
        async with running_projection(loyalty_settings, redis) as projection, \
                live_worker(loyalty_settings, PROGRAM) as live:
            await live.publish(*STORY)
            await live.read("ledger", 1, customer="alice")  # registered before purchasing (no order across topics)
            await live.publish(*PURCHASES)
            await live.read("ledger", 3, customer="alice")
            await live.publish(REDEMPTION)
            view = await eventually(lambda: caught_up(reader, "alice", 5, "silver"), what="alice at seq 5")

            assert (view.current, view.promised, view.lifetime_earned, view.redeemed) == (
                dec(60), dec(0), dec(180), dec(120))
            assert await reader.expirations("rm", "alice") == [(date(2026, 4, 4), dec(30)),
                                                               (date(2026, 4, 19), dec(30))]
            assert await reader.expirations("rm", "alice", as_of=date(2026, 4, 5)) == [(date(2026, 4, 19), dec(30))]
            history = await reader.history("rm", "alice", 10)
            assert [(h["seq"], h["kind"], dec(h["amount"])) for h in history] == [
                (5, "redeem", dec(-20)), (4, "redeem", dec(-100)), (3, "earn", dec(30)), (2, "earn", dec(50)),
                (1, "earn", dec(100))]
            assert history[2]["text"] == ("2026-03-20  +30 points earned on bill B-2 (PCT, rule 'pct'), usable "
                                          "through 2026-04-19; balance 180")
            templates = await eventually(lambda: _templates(reader, "alice", 2), what="notifications")
            assert templates == ["tier_upgraded", "welcome"]  # newest first
            await eventually(lambda: caught_up(reader, "bob", 1), what="bob")
            spread = await reader.distribution("rm", [Decimal(0), Decimal(50), Decimal(100)])
            assert [(b.bucket.label, b.customers) for b in spread.buckets] == [
                ("< 0", 0), ("[0, 50)", 0), ("[50, 100)", 1), (">= 100", 1)]
            assert (spread.customers, spread.minimum, spread.maximum, spread.percentiles[50]) == (
                2, dec(60), dec(100), dec(60))
            assert await reader.programs() == ["rm"]
            before = await snapshot(redis, keys)

            # At-least-once: every output record delivered a second time.
            for logical in OUTPUTS:
                records = await consume_until(loyalty_settings.kafka_bootstrap, live.topic(logical))
                await produce_many(loyalty_settings.kafka_bootstrap, live.topic(logical),
                                   [(r.key, r.raw) for r in records])
            await eventually(lambda: _no_lag(projection), what="duplicates consumed")
            assert projection.totals.duplicates > 0 and projection.totals.drift == 0
            assert await snapshot(redis, keys) == before

        # The position lost: everything is read again from the beginning, on top of the data.
        offsets = await snapshot(redis, keys, skip_offsets=False)
        await redis.delete(keys.offsets)
        again = await Projection(loyalty_settings, redis).catch_up()
        assert again.records > 0 and again.skipped == 0
        assert await snapshot(redis, keys, skip_offsets=False) == offsets

        # A rebuild from nothing gives the same read model.
        rebuilt = await Projection(loyalty_settings, redis).rebuild()
        assert rebuilt.records == again.records
        assert await snapshot(redis, keys, skip_offsets=False) == offsets
    finally:
        await redis.aclose()


async def _templates(reader: ReadModel, customer: str, count: int) -> list[str] | None:
    found = [n["template"] for n in await reader.notifications("rm", customer, 10)]
    return found if len(found) >= count else None


async def _no_lag(projection: Projection) -> bool:
    return await projection.lag() == 0
