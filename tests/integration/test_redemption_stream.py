"""Issue 5 through a real broker: redemption answers with reasons, and a return claws back exactly the
points of the returned line item."""

from __future__ import annotations

import pytest

from loyalty_stream.settings import Settings

from .harness import activity, dec, live_worker, program

pytestmark = pytest.mark.integration

PROGRAM = program(
    id="shop", rounding={"decimals": 0}, point_value="0.5",
    earn_conditions=[{"code": "PCT", "allocation": {"type": "prorated", "percent": 10}}],
    # The document's example: 150 lifetime points, multiples of 50, at most 100 per transaction.
    redeem_conditions=[{"code": "DOC", "lifetime_points_required": 150, "multiples_of": 50,
                        "max_points_per_transaction": 100}],
    rule_sets={"TransactionAdd": [{"name": "earn", "rules": [
        {"name": "pct", "actions": [{"type": "allocate", "condition": "PCT",
                                     "line_items": {"use_proportions": True}}]}]}]},
)


def redeem(event_id: str, customer: str, points: str) -> dict:
    return activity("PointsRedemption", event_id, customer, "2026-05-03T10:00:00Z", program_id="shop",
                    points=points)


async def test_redemption_answers_and_line_item_return(loyalty_settings: Settings,
                                                       catalogue_topics: dict[str, str]) -> None:
    async with live_worker(loyalty_settings, PROGRAM) as live:
        await live.publish(
            activity("TransactionAdd", "t-rob", "rob", "2026-05-01T10:00:00Z", program_id="shop",
                     bill_number="B-9", amount="2000", line_items=[
                         {"item_id": "1", "sku": "SHIRT", "amount": "500"},
                         {"item_id": "2", "sku": "COAT", "amount": "1500"}]),
            activity("TransactionAdd", "t-new", "nia", "2026-05-01T10:00:00Z", program_id="shop",
                     bill_number="B-10", amount="1000"),
        )
        earned = await live.read("ledger", 2, customer="rob")
        assert sorted((e["line_item_id"], dec(e["amount"])) for e in earned) == [("1", dec(50)), ("2", dec(150))]
        await live.read("ledger", 1, customer="nia")

        await live.publish(activity("TransactionReturn", "ret-1", "rob", "2026-05-02T10:00:00Z", program_id="shop",
                                    bill_number="B-9", line_items=[{"item_id": "1"}]))
        clawed = (await live.read("ledger", 3, customer="rob"))[-1]
        assert (clawed["kind"], clawed["line_item_id"], dec(clawed["amount"])) == ("return", "1", dec(-50))
        assert dec((await live.balance("rob", 2))["current"]) == dec(150)

        await live.publish(redeem("r-odd", "rob", "75"), redeem("r-big", "rob", "150"), redeem("r-ok", "rob", "100"),
                           redeem("r-nia", "nia", "50"))
        answers = {a["request_event_id"]: a for a in await live.read("redemption-results", 4)}
        assert (answers["r-odd"]["status"], answers["r-odd"]["reason_code"]) == ("rejected", "not_a_multiple")
        assert (answers["r-big"]["status"], answers["r-big"]["reason_code"]) == ("rejected",
                                                                               "over_transaction_limit")
        assert (answers["r-nia"]["status"], answers["r-nia"]["reason_code"]) == ("rejected",
                                                                               "lifetime_points_not_met")
        ok = answers["r-ok"]
        assert ok["status"] == "accepted" and ok["reason_code"] is None
        assert (dec(ok["points_debited"]), dec(ok["currency_value"]), dec(ok["balance_after"])) == (
            dec(100), dec(50), dec(50))
        assert sum(dec(lot["points"]) for lot in ok["lots"]) == dec(100)
        assert all(a["message"] for a in answers.values())
        assert dec((await live.balance("rob", 3))["current"]) == dec(50)  # rejections debit nothing
