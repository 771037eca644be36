"""Returns: claw-back pro rata from the bill's own lots, before and after conversion, after spending, the
shortfall policies, and the points redeemed on a returned bill."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from loyalty_stream.engine.state import new_state
from loyalty_stream.events.outputs import Bucket, LedgerKind

from .test_redeem import Customer, add_lot, earn_rules, make_program

D = Decimal
ITEMS = [{"item_id": "I1", "sku": "A", "amount": "150", "quantity": 3},
         {"item_id": "I2", "sku": "B", "amount": "50"}]


def kinds(outcome: Any) -> list[tuple[LedgerKind, Bucket, Decimal]]:
    return [(e.kind, e.bucket, e.amount) for e in outcome.ledger]


def test_full_return_before_conversion_cancels_the_promised_points() -> None:
    c = Customer(make_program(rule_sets=earn_rules("LATE")))
    c.buy("B1", "200", "2024-03-01T10:00:00+00:00")
    state = c.state
    assert (state.promised, state.lifetime_earned, state.lifetime_purchases) == (D("20"), D("20"), D("200"))
    outcome = c.do("TransactionReturn", "2024-03-02T10:00:00+00:00", bill_number="B1", whole_bill=True)
    assert kinds(outcome) == [(LedgerKind.RETURN, Bucket.PROMISED, D("-20.00"))]
    entry = outcome.ledger[0]
    assert entry.promised_after == 0 and entry.bill_number == "B1" and entry.condition_code == "LATE"
    assert entry.reason == "bill B1 returned"
    assert (c.state.promised, c.state.lifetime_earned, c.state.lifetime_purchases) == (0, 0, 0)
    assert c.state.bills["B1"].fully_returned
    assert c.buy("B2", "0", "2024-03-09T10:00:00+00:00").ledger == []  # nothing left to convert


def test_line_item_returns_before_and_after_conversion_never_claw_twice() -> None:
    c = Customer(make_program(rule_sets=earn_rules("LATE")))
    c.buy("B1", "200", "2024-03-01T10:00:00+00:00", line_items=ITEMS)  # 20 promised until 5 March
    one = c.do("TransactionReturn", "2024-03-02T10:00:00+00:00", bill_number="B1",
               line_items=[{"item_id": "I1", "quantity": 1}])
    assert kinds(one) == [(LedgerKind.RETURN, Bucket.PROMISED, D("-5.00"))]  # 50 of 200
    assert c.state.promised == D("15")
    converted = c.buy("B2", "0", "2024-03-06T10:00:00+00:00")
    assert [(e.kind, e.amount) for e in converted.ledger] == [(LedgerKind.CONVERT, D("15.00"))]
    more = c.do("TransactionReturn", "2024-03-07T10:00:00+00:00", bill_number="B1",
                line_items=[{"item_id": "I1", "quantity": 5}])  # only 2 are left to return
    assert kinds(more) == [(LedgerKind.RETURN, Bucket.CURRENT, D("-10.00"))]
    item = c.state.bills["B1"].items["I1"]
    assert (item.returned_quantity, item.returned_amount) == (D("3"), D("150"))
    again = c.do("TransactionReturn", "2024-03-07T11:00:00+00:00", bill_number="B1",
                 line_items=[{"item_id": "I1"}])
    assert again.ledger == []
    last = c.do("TransactionReturn", "2024-03-08T10:00:00+00:00", bill_number="B1",
                line_items=[{"item_id": "I2"}])
    assert kinds(last) == [(LedgerKind.RETURN, Bucket.CURRENT, D("-5.00"))]
    assert c.state.current == 0 and c.state.lifetime_earned == 0 and c.state.lifetime_purchases == 0
    assert c.state.bills["B1"].fully_returned
    repeat = c.do("TransactionReturn", "2024-03-09T10:00:00+00:00", bill_number="B1", whole_bill=True)
    assert repeat.ledger == []


def test_amount_returns_in_thirds_claw_exactly_the_whole_lot() -> None:
    c = Customer(make_program(rounding={"decimals": 0}))
    c.buy("B1", "100", "2024-03-01T10:00:00+00:00")  # 10 points
    claws = [c.do("TransactionReturn", f"2024-03-0{2 + i}T10:00:00+00:00", bill_number="B1", amount=amount)
             .ledger[0].amount for i, amount in enumerate(["33.33", "33.33", "33.34"])]
    assert claws == [D("-3"), D("-4"), D("-3")]
    assert c.state.current == 0 and c.state.bills["B1"].fully_returned


def test_amount_return_on_an_itemised_bill_spreads_over_its_lines() -> None:
    c = Customer(make_program())
    c.buy("B1", "200", "2024-03-01T10:00:00+00:00", line_items=ITEMS)
    outcome = c.do("TransactionReturn", "2024-03-02T10:00:00+00:00", bill_number="B1", amount="100")
    assert kinds(outcome) == [(LedgerKind.RETURN, Bucket.CURRENT, D("-10.00"))]
    items = c.state.bills["B1"].items
    assert (items["I1"].returned_amount, items["I2"].returned_amount) == (D("75.00"), D("25.00"))
    assert c.state.lifetime_purchases == D("100")


def test_item_lots_follow_their_item_and_bill_lots_the_bill() -> None:
    """Line-item allocation (another module) writes lots with `line_item_id`; built directly here."""
    c = Customer(make_program(rule_sets={}))
    c.buy("B1", "400", "2024-03-01T10:00:00+00:00", line_items=[
        {"item_id": "I1", "sku": "A", "amount": "300", "quantity": 3},
        {"item_id": "I2", "sku": "B", "amount": "100"}])
    for lot_id, points, item in [("i1", "30", "I1"), ("i2", "10", "I2"), ("bill", "5", None)]:
        add_lot(c.state, lot_id, points, bill="B1", item=item).source_event_id = "e1"
    one = c.do("TransactionReturn", "2024-03-02T10:00:00+00:00", bill_number="B1",
               line_items=[{"item_id": "I1", "quantity": 1}])
    assert [(e.lot_id, e.amount, e.line_item_id) for e in one.ledger] == [
        ("i1", D("-10.00"), "I1"), ("bill", D("-1.25"), None)]
    rest = c.do("TransactionReturn", "2024-03-03T10:00:00+00:00", bill_number="B1",
                line_items=[{"item_id": "I1", "amount": "200"}])  # the quantity follows the amount
    assert [(e.lot_id, e.amount) for e in rest.ledger] == [("i1", D("-20.00")), ("bill", D("-2.50"))]
    assert c.state.bills["B1"].items["I1"].returned_quantity == D("3")
    assert c.state.current == D("11.25")


def test_spent_points_take_available_records_the_shortfall() -> None:
    c = Customer(make_program())
    c.buy("B1", "200", "2024-03-01T10:00:00+00:00")
    c.redeem("15", "2024-03-02T10:00:00+00:00")
    outcome = c.do("TransactionReturn", "2024-03-03T10:00:00+00:00", bill_number="B1", whole_bill=True)
    entry = outcome.ledger[0]
    assert (entry.amount, entry.desired_amount, entry.shortfall, entry.balance_after) == (
        D("-5.00"), D("-20.00"), D("15.00"), D("0"))
    assert entry.reason is not None and "15 had already been redeemed, not recovered" in entry.reason
    assert (c.state.current, c.state.debt, c.state.returned, c.state.lifetime_earned) == (0, 0, D("5"), 0)


def test_spent_points_allow_negative_charges_a_debt_the_next_points_pay() -> None:
    c = Customer(make_program(return_policy={"shortfall": "allow_negative"}))
    c.buy("B1", "200", "2024-03-01T10:00:00+00:00")
    c.redeem("15", "2024-03-02T10:00:00+00:00")
    outcome = c.do("TransactionReturn", "2024-03-03T10:00:00+00:00", bill_number="B1", whole_bill=True)
    entry = outcome.ledger[0]
    assert (entry.amount, entry.desired_amount, entry.shortfall, entry.balance_after) == (
        D("-20.00"), None, None, D("-15.00"))
    assert entry.reason is not None and "charged as a negative balance" in entry.reason
    assert c.state.debt == D("15") and c.state.current == D("-15")
    assert outcome.balance_change is not None and outcome.balance_change.current == D("-15")
    earned = c.buy("B2", "300", "2024-03-04T10:00:00+00:00")
    assert [(e.amount, e.balance_after) for e in earned.ledger] == [(D("30.00"), D("15.00"))]
    assert c.state.debt == 0 and c.state.lots[-1].remaining == D("15")


def test_partly_spent_lot_partial_then_full_return() -> None:
    c = Customer(make_program())
    c.buy("B1", "1000", "2024-03-01T10:00:00+00:00")  # 100
    c.redeem("60", "2024-03-02T10:00:00+00:00")
    half = c.do("TransactionReturn", "2024-03-03T10:00:00+00:00", bill_number="B1", amount="500")
    # the kept half of the goods earned 50 of the 60 redeemed
    assert [(e.amount, e.shortfall) for e in half.ledger] == [(D("-40.00"), D("10.00"))]
    rest = c.do("TransactionReturn", "2024-03-04T10:00:00+00:00", bill_number="B1", amount="500")
    assert [(e.amount, e.shortfall) for e in rest.ledger] == [(D("0"), D("50.00"))]
    assert c.state.lots[0].shortfall == D("60")


def test_expired_points_are_not_a_shortfall_even_with_negative_balances() -> None:
    c = Customer(make_program(return_policy={"shortfall": "allow_negative"}))
    c.buy("B1", "1000", "2024-03-01T10:00:00+00:00")
    c.state.lots[0].expires_at = datetime.fromisoformat("2024-04-01T00:00:00+00:00")
    c.redeem("30", "2024-03-10T10:00:00+00:00")
    outcome = c.do("TransactionReturn", "2024-04-02T10:00:00+00:00", bill_number="B1", whole_bill=True)
    assert [e.kind for e in outcome.ledger] == [LedgerKind.EXPIRE, LedgerKind.RETURN]
    entry = outcome.ledger[1]
    assert (entry.amount, entry.desired_amount, entry.balance_after) == (
        D("-30.00"), D("-100.00"), D("-30.00"))
    assert entry.reason is not None and "70 had already expired" in entry.reason
    assert c.state.debt == D("30") and c.state.lifetime_earned == 0


def test_promised_lots_first_then_current() -> None:
    """A bill can hold both when some of its line lots were unlocked early (PointsUnlock); built directly."""
    c = Customer(make_program(rule_sets={}))
    c.buy("B1", "200", "2024-03-01T10:00:00+00:00", line_items=ITEMS)
    for lot_id, promised, item in [("current", False, "I1"), ("promised", True, "I2")]:
        add_lot(c.state, lot_id, "20", bill="B1", item=item, promised=promised,
                available="2024-03-05T00:00:00+00:00" if promised else None).source_event_id = "e1"
    outcome = c.do("TransactionReturn", "2024-03-02T10:00:00+00:00", bill_number="B1", whole_bill=True)
    assert [(e.lot_id, e.bucket, e.amount) for e in outcome.ledger] == [
        ("promised", Bucket.PROMISED, D("-20.00")), ("current", Bucket.CURRENT, D("-20.00"))]


# Points redeemed on the returned bill -----------------------------------------------------------------

def paid_with_points(policy: dict[str, Any], **program: Any) -> Customer:
    state = new_state("c1", "default")
    add_lot(state, "old", "50", expires="2024-07-01T00:00:00+00:00")
    c = Customer(make_program(return_policy=policy, **program), state)
    c.buy("B1", "1000", "2024-03-01T10:00:00+00:00")  # 100, never expires
    c.redeem("50", "2024-03-01T10:05:00+00:00", bill_number="B1", redemption_id="R-1")  # from "old"
    return c


def test_partial_return_keeps_the_redemption_full_return_reverses_it_first() -> None:
    c = paid_with_points({"redeemed_points": "reverse"})
    half = c.do("TransactionReturn", "2024-03-02T10:00:00+00:00", bill_number="B1", amount="500")
    assert kinds(half) == [(LedgerKind.RETURN, Bucket.CURRENT, D("-50.00"))]
    assert not c.state.redemptions["R-1"].reversed
    rest = c.do("TransactionReturn", "2024-03-03T10:00:00+00:00", bill_number="B1", amount="500")
    assert [(e.kind, e.lot_id, e.amount, e.balance_after) for e in rest.ledger] == [
        (LedgerKind.REVERSE, "old", D("50"), D("100.00")),
        (LedgerKind.RETURN, c.state.lots[1].lot_id, D("-50.00"), D("50.00")),
    ]
    assert rest.ledger[0].expires_at == datetime.fromisoformat("2024-07-01T00:00:00+00:00")
    assert rest.ledger[0].redemption_id == "R-1"
    assert c.state.redemptions["R-1"].reversed and c.state.redeemed == 0


def test_a_bill_paid_with_its_own_points_gives_them_back_before_the_claw() -> None:
    c = Customer(make_program(return_policy={"shortfall": "allow_negative"}))
    c.buy("B1", "1000", "2024-03-01T10:00:00+00:00")
    c.redeem("100", "2024-03-01T10:05:00+00:00", bill_number="B1")
    outcome = c.do("TransactionReturn", "2024-03-02T10:00:00+00:00", bill_number="B1", whole_bill=True)
    assert [(e.kind, e.amount) for e in outcome.ledger] == [(LedgerKind.REVERSE, D("100.00")),
                                                             (LedgerKind.RETURN, D("-100.00"))]
    assert c.state.current == 0 and c.state.debt == 0


def test_reissue_policy_gives_a_new_lot_with_the_reissue_expiry() -> None:
    c = paid_with_points({"redeemed_points": "reissue", "reissue_expiry": "E30"},
                         expiry_conditions=[{"code": "E30", "unit": "days", "value": 30}])
    outcome = c.do("TransactionReturn", "2024-03-10T10:00:00+00:00", bill_number="B1", whole_bill=True)
    assert [(e.kind, e.amount) for e in outcome.ledger] == [(LedgerKind.REISSUE, D("50")),
                                                             (LedgerKind.RETURN, D("-100.00"))]
    reissue = outcome.ledger[0]
    lot = c.state.lot(reissue.lot_id or "")
    assert lot is not None and lot.origin == "reissue" and lot.expiry_code == "E30"
    # usable through 10 March + 30 days = 9 April, gone at 00:00 on the 10th (engine/expiry.py)
    assert lot.expires_at == datetime.fromisoformat("2024-04-10T00:00:00+00:00")
    assert reissue.redemption_id == "R-1" and reissue.expires_at == lot.expires_at
    assert c.state.lot("old") is not None and c.state.lot("old").remaining == 0  # type: ignore[union-attr]
    assert c.state.lifetime_earned == D("50")  # reissued points are not earned again


def test_reissue_puts_points_of_the_returned_bill_itself_back_in_its_lot_to_be_clawed() -> None:
    c = Customer(make_program(return_policy={"redeemed_points": "reissue"}))
    c.buy("B1", "1000", "2024-03-01T10:00:00+00:00")
    c.redeem("30", "2024-03-01T10:05:00+00:00", bill_number="B1")  # paid with B1's own points
    outcome = c.do("TransactionReturn", "2024-03-02T10:00:00+00:00", bill_number="B1", whole_bill=True)
    assert [(e.kind, e.amount) for e in outcome.ledger] == [(LedgerKind.REVERSE, D("30.00")),
                                                             (LedgerKind.RETURN, D("-100.00"))]
    assert c.state.current == 0


def test_keep_policy_leaves_the_redemption_spent() -> None:
    c = paid_with_points({"redeemed_points": "keep"})
    outcome = c.do("TransactionReturn", "2024-03-10T10:00:00+00:00", bill_number="B1", whole_bill=True)
    assert [e.kind for e in outcome.ledger] == [LedgerKind.RETURN]
    assert not c.state.redemptions["R-1"].reversed


def test_reversal_after_a_forgiven_shortfall_does_not_give_the_points_back() -> None:
    c = Customer(make_program())
    c.buy("B1", "1000", "2024-03-01T10:00:00+00:00")
    c.redeem("60", "2024-03-02T10:00:00+00:00", redemption_id="R-1")
    c.do("TransactionReturn", "2024-03-03T10:00:00+00:00", bill_number="B1", whole_bill=True)
    outcome = c.do("RedemptionReversal", "2024-03-04T10:00:00+00:00", redemption_id="R-1")
    entry = outcome.ledger[0]
    assert (entry.kind, entry.amount, entry.desired_amount) == (LedgerKind.REVERSE, D("0"), D("60"))
    assert entry.reason is not None and "withheld" in entry.reason
    assert c.state.current == 0 and c.state.lots[0].shortfall == 0


def test_reversal_after_a_charged_shortfall_pays_the_debt() -> None:
    c = Customer(make_program(return_policy={"shortfall": "allow_negative"}))
    c.buy("B1", "1000", "2024-03-01T10:00:00+00:00")
    c.redeem("60", "2024-03-02T10:00:00+00:00", redemption_id="R-1")
    c.do("TransactionReturn", "2024-03-03T10:00:00+00:00", bill_number="B1", whole_bill=True)
    assert c.state.current == D("-60")
    outcome = c.do("RedemptionReversal", "2024-03-04T10:00:00+00:00", redemption_id="R-1")
    assert [(e.amount, e.balance_after) for e in outcome.ledger] == [(D("60.00"), D("0"))]
    assert c.state.debt == 0 and c.state.current == 0


# Bad input, tiers ------------------------------------------------------------------------------------

def test_an_unknown_item_is_dead_lettered_and_an_unknown_bill_waits_both_changing_nothing() -> None:
    c = Customer(make_program())
    c.buy("B1", "200", "2024-03-01T10:00:00+00:00", line_items=ITEMS)
    bill = c.do("TransactionReturn", "2024-03-02T10:00:00+00:00", bill_number="NOPE", whole_bill=True)
    assert bill.rejected is None and bill.ledger == [] and "'NOPE'" in bill.parked[0]  # see test_parking
    item = c.do("TransactionReturn", "2024-03-02T10:00:00+00:00", bill_number="B1",
                line_items=[{"item_id": "I1"}, {"item_id": "I9"}])
    assert item.rejected is not None and "I9" in item.rejected
    assert c.state.current == D("20") and c.state.bills["B1"].items["I1"].returned_quantity == 0


def test_whole_return_of_a_bill_known_only_by_its_redemption_gives_the_points_back() -> None:
    state = new_state("c1", "default")
    add_lot(state, "old", "50")
    c = Customer(make_program(), state)
    c.redeem("20", "2024-03-01T10:00:00+00:00", bill_number="POS-7")
    outcome = c.do("TransactionReturn", "2024-03-02T10:00:00+00:00", bill_number="POS-7", whole_bill=True)
    assert outcome.rejected is None and [e.kind for e in outcome.ledger] == [LedgerKind.REVERSE]
    assert c.state.current == D("50")


def test_tiers_are_not_downgraded_by_a_return() -> None:
    c = Customer(make_program(tiers=[{"name": "bronze"}, {"name": "silver", "threshold": 100}]))
    c.buy("B1", "1000", "2024-03-01T10:00:00+00:00")
    assert c.state.tier == "silver"
    outcome = c.do("TransactionReturn", "2024-03-02T10:00:00+00:00", bill_number="B1", whole_bill=True)
    assert c.state.tier == "silver" and outcome.tier_changes == [] and c.state.lifetime_earned == 0


def test_a_return_releases_the_cap_usage_of_the_points_it_claws() -> None:
    rule_sets = earn_rules("BASE")
    rule_sets["TransactionAdd"][0]["caps"] = {"total_points": 50}
    c = Customer(make_program(rule_sets=rule_sets))
    assert [e.amount for e in c.buy("B1", "1000", "2024-03-01T10:00:00+00:00").ledger] == [D("50.00")]
    assert c.buy("B2", "1000", "2024-03-02T10:00:00+00:00").ledger == []  # the cap is used up
    c.do("TransactionReturn", "2024-03-03T10:00:00+00:00", bill_number="B1", amount="500")  # half of the 50
    assert [e.amount for e in c.buy("B3", "1000", "2024-03-04T10:00:00+00:00").ledger] == [D("25.00")]


def test_allow_negative_charges_other_points_first_so_they_do_not_expire_twice() -> None:
    state = new_state("c1", "default")
    add_lot(state, "other", "100", expires="2024-07-01T00:00:00+00:00")
    c = Customer(make_program(return_policy={"shortfall": "allow_negative"}), state)
    c.buy("B1", "1000", "2024-03-01T10:00:00+00:00")
    bill_lot = c.state.lots[1]
    bill_lot.expires_at = datetime.fromisoformat("2024-06-01T00:00:00+00:00")  # spent first
    c.redeem("80", "2024-03-02T10:00:00+00:00")
    outcome = c.do("TransactionReturn", "2024-03-03T10:00:00+00:00", bill_number="B1", whole_bill=True)
    assert [(e.lot_id, e.amount, e.desired_amount, e.balance_after) for e in outcome.ledger] == [
        (bill_lot.lot_id, D("-20.00"), D("-100.00"), D("100.00")), ("other", D("-80.00"), None, D("20.00"))]
    assert outcome.ledger[0].reason == (
        "bill B1 returned; 80 had already been redeemed: 80 taken from other points")
    assert c.state.debt == 0 and c.state.returned == D("100")
    later = c.buy("B2", "0", "2024-07-02T10:00:00+00:00")
    assert [(e.kind, e.amount) for e in later.ledger] == [(LedgerKind.EXPIRE, D("-20"))]


def test_lot_shortfall_round_trips_and_older_stored_lots_read_as_zero() -> None:
    from loyalty_stream.engine.state import state_from_dict, state_to_dict

    c = Customer(make_program())
    c.buy("B1", "1000", "2024-03-01T10:00:00+00:00")
    c.redeem("60", "2024-03-02T10:00:00+00:00")
    c.do("TransactionReturn", "2024-03-03T10:00:00+00:00", bill_number="B1", whole_bill=True)
    data = state_to_dict(c.state)
    assert state_from_dict(data) == c.state and state_from_dict(data).lots[0].shortfall == D("60")
    data["lots"][0] = data["lots"][0][:16]  # written before the field existed
    assert state_from_dict(data).lots[0].shortfall == 0
