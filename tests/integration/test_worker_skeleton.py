"""Issue 2 through a real broker: earning (fixed, prorated, per tier), idempotence, dead letters."""

from __future__ import annotations

import orjson
import pytest

from loyalty_stream.settings import Settings

from .harness import activity, dec, live_worker, program

pytestmark = pytest.mark.integration

EARNING = program(
    tiers=[{"name": "bronze", "threshold": 0}, {"name": "gold", "threshold": 1000}],
    rounding={"decimals": 2},
    earn_conditions=[
        {"code": "PCT", "allocation": {"type": "prorated", "percent": {"bronze": 10, "gold": 20}}},
        {"code": "VISIT", "allocation": {"type": "fixed", "points": 5}},
        {"code": "WELCOME", "allocation": {"type": "fixed", "points": {"bronze": 100, "gold": 500}}},
    ],
    rule_sets={
        "TransactionAdd": [
            {"name": "base", "rules": [{"name": "pct", "actions": [{"type": "allocate", "condition": "PCT"}]}]},
            {"name": "visit", "rules": [{"name": "visit", "actions": [{"type": "allocate", "condition": "VISIT"}]}]},
        ],
        "Registration": [{"name": "welcome", "rules": [
            {"name": "welcome", "actions": [{"type": "allocate", "condition": "WELCOME"}]}]}],
    },
)


def purchase(event_id: str, customer: str, amount: str, when: str = "2026-03-02T10:00:00Z") -> dict:
    return activity("TransactionAdd", event_id, customer, when, bill_number=f"B-{event_id}", amount=amount)


async def test_purchase_earns_fixed_and_prorated_points_per_tier(loyalty_settings: Settings,
                                                                  catalogue_topics: dict[str, str]) -> None:
    async with live_worker(loyalty_settings, EARNING) as live:
        await live.publish(
            activity("Registration", "r-ann", "ann", "2026-03-01T09:00:00Z"),
            activity("Registration", "r-gus", "gus", "2026-03-01T09:00:00Z", tier="gold"),
        )
        await live.balance("gus", 1)  # topics are ordered only within themselves: register first
        await live.balance("ann", 1)
        await live.publish(purchase("t-ann", "ann", "123.45"), purchase("t-gus", "gus", "123.45"))
        ann = await live.balance("ann", 2)
        gus = await live.balance("gus", 2)
        assert dec(ann["current"]) == dec("100") + dec("12.35") + 5  # bronze: 10% of 123.45, half-up to 2 dp
        assert dec(gus["current"]) == dec("500") + dec("24.69") + 5  # gold: 20%
        ledger = await live.read("ledger", 3, customer="gus")
        assert [(e["kind"], e["condition_code"], dec(e["amount"])) for e in ledger] == [
            ("earn", "WELCOME", dec(500)), ("earn", "PCT", dec("24.69")), ("earn", "VISIT", dec(5))]
        assert all(e["program_version"] == 1 and e["source"]["topic"].endswith("-transaction-add")
                   for e in ledger[1:])
        assert [e["seq"] for e in ledger] == [1, 2, 3]


async def test_duplicate_event_id_credits_once(loyalty_settings: Settings,
                                               catalogue_topics: dict[str, str]) -> None:
    async with live_worker(loyalty_settings, EARNING) as live:
        await live.publish(purchase("dup", "dee", "100"), purchase("dup", "dee", "100"),
                           purchase("after", "dee", "50"))
        changes = await live.read("balance-changes", 2, customer="dee")
        assert [dec(c["current"]) for c in changes] == [dec(15), dec(25)]  # 10+5, then 5+5: no second credit
        ledger = await live.read("ledger", 4, customer="dee")
        assert len({e["entry_id"] for e in ledger}) == 4
        assert sorted(e["source_event_id"] for e in ledger) == ["after", "after", "dup", "dup"]


@pytest.mark.parametrize(
    ("raw", "error_class", "reason_part"),
    [
        (b"{this is not json", "not_json", "JSON"),
        (orjson.dumps({"type": "Teleport", "customer_id": "eve"}), "unknown_type", "Teleport"),
        (orjson.dumps(purchase("neg", "eve", "-10")), "schema_violation", "payload.amount"),
        # digits and dots only (the decoder's fast path), but 29 digits: refused as the models refuse it
        (orjson.dumps(purchase("long", "eve", "1" * 29)), "schema_violation",
         "payload.amount: Decimal input should have no more than 28 digits"),
        (orjson.dumps({**purchase("nt", "eve", "10"), "event_time": "2026-03-02T10:00:00"}),
         "schema_violation", "event_time"),
        (orjson.dumps({**purchase("np", "eve", "10"), "program_id": "ghost"}), "unknown_program", "ghost"),
        (orjson.dumps(activity("Registration", "wt", "eve", "2026-03-01T09:00:00Z")), "wrong_topic", "registration"),
    ],
)
async def test_bad_input_is_dead_lettered_and_the_next_event_still_flows(
    loyalty_settings: Settings, catalogue_topics: dict[str, str], raw: bytes, error_class: str, reason_part: str
) -> None:
    async with live_worker(loyalty_settings, EARNING) as live:
        await live.publish(("transaction-add", "eve", raw), purchase("good", "eve", "20"))
        letters = await live.read("dead-letter", 1)
        assert letters[0]["error_class"] == error_class
        assert reason_part in letters[0]["reason"]
        assert letters[0]["value"] == raw.decode() and letters[0]["topic"].endswith("transaction-add")
        assert letters[0]["offset"] == 0 and letters[0]["key"] == "eve"
        assert dec((await live.balance("eve", 1))["current"]) == dec(7)  # 10% of 20 + 5
