"""Manual adjustments: additions are lots, deductions never take the balance below zero."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from loyalty_stream.engine.state import new_state
from loyalty_stream.events.outputs import LedgerKind

from .test_redeem import Customer, add_lot, make_program

D = Decimal
OPERATOR = {"reason": "goodwill for late delivery", "operator_id": "op-7"}


def test_add_creates_an_adjust_lot_with_the_default_expiry_and_counts_as_earned() -> None:
    expiry = [{"code": "Y1", "unit": "months", "value": 12}]
    c = Customer(make_program(default_expiry="Y1", expiry_conditions=expiry))
    outcome = c.adjust("add", "25.555", "2024-03-10T10:00:00+00:00")
    entry = outcome.ledger[0]
    assert (entry.kind, entry.amount, entry.balance_after) == (LedgerKind.ADJUST, D("25.56"), D("25.56"))
    assert (entry.reason, entry.operator_id, entry.source_type) == (
        "goodwill for late delivery", "op-7", "ManualAdjustment")
    lot = c.state.lots[0]
    assert lot.origin == "adjust" and lot.expiry_code == "Y1"
    assert lot.expires_at == datetime.fromisoformat("2025-04-01T00:00:00+00:00")  # through 31 March 2025
    assert c.state.lifetime_earned == D("25.56")


def test_deduct_takes_soonest_expiring_points_first_one_entry_per_lot() -> None:
    state = new_state("c1", "default")
    add_lot(state, "later", "50", expires="2024-09-01T00:00:00+00:00")
    add_lot(state, "sooner", "20", expires="2024-06-01T00:00:00+00:00")
    c = Customer(make_program(), state)
    outcome = c.do("ManualAdjustment", "2024-03-10T10:00:00+00:00", direction="deduct", points="30",
                   reason="duplicate credit", operator_id="op-1")
    assert [(e.kind, e.lot_id, e.amount, e.balance_after) for e in outcome.ledger] == [
        (LedgerKind.ADJUST, "sooner", D("-20"), D("50")), (LedgerKind.ADJUST, "later", D("-10"), D("40"))]
    assert all(e.reason == "duplicate credit" and e.operator_id == "op-1" for e in outcome.ledger)
    assert all(e.condition_code is None and e.bill_number is None for e in outcome.ledger)
    assert c.state.redeemed == 0 and c.state.lifetime_earned == D("70")  # not a redemption, not un-earning


def test_deduct_beyond_the_balance_is_refused_without_clamp() -> None:
    state = new_state("c1", "default")
    add_lot(state, "a", "10")
    c = Customer(make_program(), state)
    outcome = c.adjust("deduct", "10.01", "2024-03-10T10:00:00+00:00")
    assert outcome.rejected is not None and "10.01" in outcome.rejected and "clamp" in outcome.rejected
    assert outcome.ledger == [] and c.state.current == D("10")
    exact = c.adjust("deduct", "10", "2024-03-10T11:00:00+00:00")  # down to zero, never below
    assert exact.rejected is None and [(e.amount, e.balance_after) for e in exact.ledger] == [(D("-10"), D("0"))]


def test_deduct_with_clamp_takes_what_is_there() -> None:
    state = new_state("c1", "default")
    add_lot(state, "a", "10")
    c = Customer(make_program(), state)
    outcome = c.do("ManualAdjustment", "2024-03-10T10:00:00+00:00", direction="deduct", points="25",
                   clamp=True, **OPERATOR)
    assert [(e.amount, e.balance_after) for e in outcome.ledger] == [(D("-10"), D("0"))]
    assert outcome.ledger[0].reason == "goodwill for late delivery (clamped: 25 requested, 10 available)"
    empty = c.do("ManualAdjustment", "2024-03-11T10:00:00+00:00", direction="deduct", points="5",
                 clamp=True, **OPERATOR)
    assert [(e.kind, e.amount, e.desired_amount, e.lot_id) for e in empty.ledger] == [
        (LedgerKind.ADJUST, D("0"), D("-5.00"), None)]
    assert empty.rejected is None and c.state.current == 0


def test_deduct_never_touches_promised_points() -> None:
    state = new_state("c1", "default")
    add_lot(state, "p", "100", promised=True, available="2024-09-01T00:00:00+00:00")
    c = Customer(make_program(), state)
    outcome = c.adjust("deduct", "1", "2024-03-10T10:00:00+00:00")
    assert outcome.rejected is not None and c.state.promised == D("100")


def test_addition_pays_a_negative_balance_first() -> None:
    c = Customer(make_program(return_policy={"shortfall": "allow_negative"}))
    c.buy("B1", "100", "2024-03-01T10:00:00+00:00")
    c.redeem("10", "2024-03-02T10:00:00+00:00")
    c.do("TransactionReturn", "2024-03-03T10:00:00+00:00", bill_number="B1", whole_bill=True)
    assert c.state.current == D("-10")
    refused = c.adjust("deduct", "1", "2024-03-04T10:00:00+00:00")
    assert refused.rejected is not None
    added = c.do("ManualAdjustment", "2024-03-04T11:00:00+00:00", direction="add", points="15", **OPERATOR)
    assert [(e.amount, e.balance_after) for e in added.ledger] == [(D("15.00"), D("5.00"))]
    assert c.state.debt == 0


def test_points_that_round_to_zero_are_refused() -> None:
    c = Customer(make_program())
    outcome = c.adjust("add", "0.004", "2024-03-10T10:00:00+00:00")
    assert outcome.rejected is not None and outcome.ledger == []


def test_deductions_do_not_count_toward_redemption_limits() -> None:
    state = new_state("c1", "default")
    add_lot(state, "a", "500")
    c = Customer(make_program(redeem_conditions=[{"code": "R", "limits": {"per_day": 100}}]), state)
    c.do("ManualAdjustment", "2024-03-10T10:00:00+00:00", direction="deduct", points="200", **OPERATOR)
    result = c.redeem("100", "2024-03-10T11:00:00+00:00").redemption_result
    assert result is not None and result.reason_code is None
