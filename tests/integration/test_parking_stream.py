"""Order across topics through a real broker: a return read before its purchase waits for it in the customer's
state, then claws back exactly as in order; nothing is dead-lettered."""

from __future__ import annotations

import asyncio

import pytest

from loyalty_stream.settings import Settings
from loyalty_stream.stream.processor import Processed
from tests.fixtures.cluster import consume_until

from .harness import activity, dec, live_worker, program

pytestmark = pytest.mark.integration

PROGRAM = program(
    id="shop", rounding={"decimals": 0},
    earn_conditions=[{"code": "PCT", "allocation": {"type": "prorated", "percent": 10}}],
    rule_sets={"TransactionAdd": [{"name": "earn", "rules": [
        {"name": "pct", "actions": [{"type": "allocate", "condition": "PCT",
                                     "line_items": {"use_proportions": True}}]}]}]},
)


async def test_a_return_read_before_its_purchase_is_applied_when_the_purchase_comes(
        loyalty_settings: Settings, catalogue_topics: dict[str, str]) -> None:
    parked = asyncio.Event()

    def watch(processed: Processed) -> None:
        if processed.outcome is not None and processed.outcome.parked and processed.customer_id == "pia":
            parked.set()

    async with live_worker(loyalty_settings, PROGRAM, after_process=watch) as live:
        await live.publish(activity("TransactionReturn", "ret-1", "pia", "2026-05-02T10:00:00Z", program_id="shop",
                                    bill_number="B-1", line_items=[{"item_id": "1"}]))
        await asyncio.wait_for(parked.wait(), 20)  # the worker has read the return: it waits in the state
        await live.publish(
            activity("TransactionAdd", "t-1", "pia", "2026-05-01T10:00:00Z", program_id="shop",
                     bill_number="B-1", amount="2000", line_items=[
                         {"item_id": "1", "sku": "SHIRT", "amount": "500"},
                         {"item_id": "2", "sku": "COAT", "amount": "1500"}]))
        ledger = await live.read("ledger", 3, customer="pia")
        assert [(e["kind"], e["line_item_id"], dec(e["amount"]), e["source_event_id"]) for e in ledger] == [
            ("earn", "1", dec(50), "t-1"), ("earn", "2", dec(150), "t-1"), ("return", "1", dec(-50), "ret-1")]
        assert ledger[2]["source"]["topic"] == live.topic("transaction-return")
        assert ledger[2]["occurred_at"].startswith("2026-05-02T10:00:00")  # the return's own event time
        assert dec((await live.balance("pia", 1))["current"]) == dec(150)
        letters = await consume_until(loyalty_settings.kafka_bootstrap, live.topic("dead-letter"),
                                      where=lambda r: r.key == "pia")  # everything written so far
        assert letters == []
