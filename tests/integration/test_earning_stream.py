"""Issue 3 through a real broker: several rule sets with expressions and caps over a mixed stream."""

from __future__ import annotations

import pytest

from loyalty_stream.settings import Settings

from .harness import activity, dec, live_worker, program

pytestmark = pytest.mark.integration

PROGRAM = program(
    id="shop", version=3,
    tiers=[{"name": "bronze", "threshold": 0}, {"name": "silver", "threshold": 60}],
    rounding={"decimals": 2, "strategy": "half_up"},
    event_points={"overrides": {"page_view": 2, "search": 0}},
    earn_conditions=[
        {"code": "PCT10", "allocation": {"type": "prorated", "percent": 10}},
        {"code": "SMALL", "allocation": {"type": "fixed", "points": 3}},
        {"code": "ONLINE", "allocation": {"type": "fixed", "points": 7}},
        {"code": "STEP", "allocation": {"type": "step", "points": 10, "step": 200, "count": "full"}},
    ],
    rule_sets={
        "TransactionAdd": [
            {"name": "base", "caps": {"total_points": 30},
             "rules": [
                 {"name": "big basket", "when": 'transaction.amount >= 100 and customer.tier == "bronze"',
                  "actions": [{"type": "allocate", "condition": "PCT10"}]},
                 {"name": "small basket", "when": "true", "actions": [{"type": "allocate", "condition": "SMALL"}]},
             ]},
            {"name": "online", "rules": [
                {"name": "online bonus", "when": 'transaction.channel in ["online", "app"]',
                 "actions": [{"type": "allocate", "condition": "ONLINE"},
                             {"type": "notify", "channel": "push", "template": "online_bonus"}]}]},
            {"name": "steps", "caps": {"source_value": 500},
             "rules": [{"name": "steps", "actions": [{"type": "allocate", "condition": "STEP"}]}]},
        ],
    },
)


def purchase(event_id: str, amount: str, channel: str, day: int) -> dict:
    return activity("TransactionAdd", event_id, "mia", f"2026-04-{day:02d}T12:00:00+02:00", program_id="shop",
                    bill_number=f"B-{event_id}", amount=amount, channel=channel)


async def test_mixed_stream_ledger_has_expected_entries(loyalty_settings: Settings,
                                                        catalogue_topics: dict[str, str]) -> None:
    async with live_worker(loyalty_settings, PROGRAM) as live:
        await live.publish(
            purchase("t1", "200", "instore", 1),   # PCT10 20, STEP 10 (one full 200 step)
            purchase("t2", "150", "online", 2),    # PCT10 15 capped to 10 (set total 30), ONLINE 7, STEP 0
            purchase("t3", "1000", "app", 3),      # PCT10 100 desired, no room left -> no entry; ONLINE 7;
                                                   # STEP on min(1000, 500) = 500 -> 20; 74 lifetime -> silver
        )
        await live.read("ledger", 6, customer="mia")  # topics are ordered only within themselves
        await live.publish(
            activity("Engagement", "e1", "mia", "2026-04-04T12:00:00Z", program_id="shop",
                     event_name="page_view", count=3),
        )
        ledger = await live.read("ledger", 7, customer="mia")
        got = [(e["source_event_id"], e["condition_code"], dec(e["amount"]),
                None if e["desired_amount"] is None else dec(e["desired_amount"])) for e in ledger]
        assert got == [
            ("t1", "PCT10", dec(20), None),
            ("t1", "STEP", dec(10), None),
            ("t2", "PCT10", dec(10), dec(15)),
            ("t2", "ONLINE", dec(7), None),
            ("t3", "ONLINE", dec(7), None),
            ("t3", "STEP", dec(20), dec(50)),
            ("e1", "event:page_view", dec(6), None),
        ]
        assert {e["program_version"] for e in ledger} == {3}
        assert all(e["program_id"] == "shop" for e in ledger)
        tiers = await live.read("tier-changes", 1, customer="mia")
        assert (tiers[0]["from_tier"], tiers[0]["to_tier"]) == ("bronze", "silver")
        notes = await live.read("notifications", 2, customer="mia")
        assert [n["template"] for n in notes if n["template"] == "online_bonus"] == ["online_bonus"] * 2
        final = await live.balance("mia", 4)
        assert dec(final["current"]) == dec(80)
