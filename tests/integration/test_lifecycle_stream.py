"""Issue 4 through a real broker and Redis: the scheduler converts and expires an idle customer's points,
an unlock converts promised points early, and expiry leaves the balance with ledger entries and a reminder."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from loyalty_stream.settings import Settings

from .harness import activity, dec, live_worker, program

pytestmark = pytest.mark.integration

DELAYED = program(
    id="delayed", timezone="Europe/London", rounding={"decimals": 0},
    earn_conditions=[{"code": "PCT", "allocation": {"type": "prorated", "percent": 10}, "delay_days": 2,
                      "expiry": "TEN_DAYS"}],
    expiry_conditions=[{"code": "TEN_DAYS", "based_on": "event_date", "unit": "days", "value": 10}],
    reminders={"days_before": [3], "channel": "push", "template": "points_expiring"},
    rule_sets={"TransactionAdd": [{"name": "earn", "rules": [
        {"name": "pct", "actions": [{"type": "allocate", "condition": "PCT"}]}]}]},
)
LOCKED = program(
    id="locked", rounding={"decimals": 0},
    earn_conditions=[{"code": "PCT", "allocation": {"type": "prorated", "percent": 10}, "delay_days": 3650}],
    rule_sets={"TransactionAdd": [{"name": "earn", "rules": [
        {"name": "pct", "actions": [{"type": "allocate", "condition": "PCT",
                                     "line_items": {"use_proportions": True}}]}]}]},
)


@pytest.mark.parametrize("engine_process", [False, True], ids=["one-process", "engine-process"])
async def test_scheduler_unlock_and_expiry(loyalty_settings: Settings, catalogue_topics: dict[str, str],
                                           redis_url: str, engine_process: bool) -> None:
    """With the engine process, the due notes the scheduler works from are computed there."""
    loyalty_settings = loyalty_settings.model_copy(update={"engine_processes": int(engine_process)})
    redis = Redis.from_url(redis_url)
    try:
        async with live_worker(loyalty_settings, DELAYED, LOCKED, redis=redis, scheduler_interval=0.5) as live:
            await live.publish(
                # Idle after this purchase: only the scheduler can convert, remind and expire.
                activity("TransactionAdd", "t-idle", "ida", "2026-01-05T15:00:00Z", program_id="delayed",
                         bill_number="B-1", amount="100"),
                activity("TransactionAdd", "t-lock", "ulf", "2026-01-05T15:00:00Z", program_id="locked",
                         bill_number="B-2", amount="250", line_items=[
                             {"item_id": "1", "sku": "A", "amount": "50"},
                             {"item_id": "2", "sku": "B", "amount": "200"}]),
            )
            ledger = await live.read("ledger", 3, customer="ida", timeout=40)
            assert [(e["kind"], e["bucket"], dec(e["amount"])) for e in ledger] == [
                ("promise", "promised", dec(10)), ("convert", "current", dec(10)), ("expire", "current", dec(-10))]
            # Morning after 5 Jan + 2 days (London): due time, not processing time, on the entry.
            assert ledger[1]["occurred_at"].startswith("2026-01-08T00:00:00")
            assert ledger[2]["occurred_at"].startswith("2026-01-16T00:00:00")  # usable through 15 Jan
            assert ledger[1]["source"] is None and ledger[1]["source_type"] == "DelayedAccrual"
            reminders = await live.read("notifications", 1, customer="ida")
            assert reminders[0]["template"] == "points_expiring"
            changes = await live.read("balance-changes", 3, customer="ida", timeout=40)  # a reminder moves nothing
            assert (dec(changes[-1]["current"]), dec(changes[-1]["expired"])) == (dec(0), dec(10))

            # Ulf's points are promised for ten years; unlocking line 2 makes exactly its points current now.
            await live.read("ledger", 2, customer="ulf")  # one promised lot per line
            await live.publish(activity("PointsUnlock", "u-1", "ulf", "2026-01-06T09:00:00Z", program_id="locked",
                                        bill_number="B-2", item_ids=["2"]))
            ulf = await live.read("balance-changes", 2, customer="ulf")
            assert (dec(ulf[1]["current"]), dec(ulf[1]["promised"])) == (dec(20), dec(5))
            converted = (await live.read("ledger", 3, customer="ulf"))[-1]
            assert (converted["kind"], converted["line_item_id"], dec(converted["amount"])) == ("convert", "2", dec(20))
    finally:
        await redis.aclose()
