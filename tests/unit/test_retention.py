"""Retention windows: returns and reversals past them are refused, and what no one can use any more is dropped
from the customer's state (bills, redemptions, emptied lots), without changing anything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from loyalty_stream.engine.state import CustomerState
from loyalty_stream.events.outputs import LedgerKind, RedemptionStatus
from loyalty_stream.program.loader import ProgramError, parse_program
from loyalty_stream.program.model import Program
from loyalty_stream.program.retention import redemption_lookback_days

from .test_redeem import Customer, earn_rules, make_program, redeem_rule_set

D = Decimal
WINDOWS = {"return_window_days": 30, "reversal_window_days": 10}
START = datetime(2024, 3, 1, tzinfo=UTC)


def program(**extra: Any) -> Program:
    return make_program(retention=WINDOWS, **extra)


def at(day: int, hour: int = 10) -> str:
    """`hour`:00 UTC on day `day` (day 1 is 1 March 2024)."""
    return (START + timedelta(days=day - 1, hours=hour)).isoformat()


def lot_ids(state: CustomerState) -> set[str]:
    return {lot.lot_id for lot in state.lots}


def test_a_return_inside_the_window_claws_back_and_one_after_it_is_refused_with_the_reason() -> None:
    c = Customer(program())
    c.buy("B1", "100", at(1))
    c.buy("B2", "100", at(5))
    inside = c.do("TransactionReturn", at(30), bill_number="B1", whole_bill=True)
    assert inside.rejected is None and [e.kind for e in inside.ledger] == [LedgerKind.RETURN]
    late = c.do("TransactionReturn", at(36), bill_number="B2", whole_bill=True)
    assert late.ledger == [] and late.rejected is not None
    assert "past the return window" in late.rejected and "30 days" in late.rejected
    assert "2024-03-05" in late.rejected


def test_the_window_counts_back_from_the_newest_activity_so_a_late_return_is_refused_too() -> None:
    c = Customer(program())
    c.buy("B1", "100", at(1, 10))
    c.buy("B2", "100", at(31, 9))  # the first activity of day 31: B1 (30 days at 10:00) is still kept
    c.buy("B3", "100", at(31, 11))  # the newest activity is now past B1's window
    assert "B1" in c.state.bills
    late = c.do("TransactionReturn", at(20), bill_number="B1", whole_bill=True)  # a late event (day 20)
    assert late.ledger == [] and late.rejected is not None and "past the return window" in late.rejected
    c.buy("B4", "100", at(32))  # a new day: B1 is dropped, a return of it is now an unknown bill
    assert "B1" not in c.state.bills
    gone = c.do("TransactionReturn", at(32, 11), bill_number="B1", whole_bill=True)
    assert gone.rejected is None and gone.ledger == [] and "'B1'" in gone.parked[0]  # dropped is not recorded
    [given_up] = c.buy("B5", "100", at(34)).given_up  # purchases moved on: it is not coming
    assert given_up.error_class == "unresolved_reference" and "'B1'" in given_up.reason
    assert "dropped after the 30-day return window" in given_up.reason


def test_a_bill_past_the_window_is_dropped_on_the_first_activity_of_a_new_day_with_its_empty_lots() -> None:
    c = Customer(program())
    c.buy("B1", "100", at(1))  # 10 points
    spent = c.redeem("10", at(2))
    assert spent.redemption_result is not None and spent.redemption_result.status == RedemptionStatus.ACCEPTED
    first_lot = next(iter(lot_ids(c.state)))
    c.buy("B2", "100", at(20))
    assert set(c.state.bills) == {"B1", "B2"} and first_lot in lot_ids(c.state)
    c.buy("B3", "100", at(33))  # B1 is past 30 days: dropped, and its lot (empty) with it
    assert set(c.state.bills) == {"B2", "B3"}
    assert first_lot not in lot_ids(c.state)
    assert "e2" not in c.state.redemptions  # past its 10-day window and its bill is gone
    unknown = c.do("TransactionReturn", at(34), bill_number="B1", whole_bill=True)
    assert unknown.rejected is None and unknown.ledger == [] and "'B1'" in unknown.parked[0]


def test_lots_that_still_hold_points_are_never_dropped() -> None:
    c = Customer(program())
    c.buy("B1", "100", at(1))
    c.buy("B2", "100", at(50))
    assert set(c.state.bills) == {"B2"}
    assert len(c.state.lots) == 2 and c.state.current == D("20.00")  # B1's lot still holds its points


def test_a_redemption_is_kept_while_its_bill_can_come_back_and_reversed_only_in_its_window() -> None:
    c = Customer(program())
    c.adjust("add", "50", at(1, 9))  # the oldest points (no bill): both redemptions spend them
    c.buy("B1", "100", at(1))
    c.redeem("5", at(2), redemption_id="R-1", bill_number="B1")
    c.redeem("5", at(3), redemption_id="R-2")
    c.buy("B2", "100", at(15))  # a new day: R-2 is past 10 days and dropped; R-1 pays for B1 (kept)
    assert set(c.state.redemptions) == {"R-1"}
    late = c.do("RedemptionReversal", at(16), redemption_id="R-1")
    assert late.rejected is not None and "past the reversal window" in late.rejected
    assert not c.state.redemptions["R-1"].reversed
    gone = c.do("RedemptionReversal", at(16, 11), redemption_id="R-2")  # dropped: waits, see test_parking
    assert gone.rejected is None and gone.ledger == [] and "'R-2'" in gone.parked[0]
    returned = c.do("TransactionReturn", at(17), bill_number="B1", whole_bill=True)  # still gives R-1 back
    assert returned.rejected is None
    assert LedgerKind.REVERSE in [e.kind for e in returned.ledger] and c.state.redemptions["R-1"].reversed


def test_a_redemption_that_spent_a_kept_bills_points_is_kept_with_the_bill() -> None:
    """A return of the bill needs to know its points were spent (the shortfall), so the redemption stays."""
    c = Customer(program())
    c.buy("B1", "100", at(1))
    c.redeem("10", at(2), redemption_id="R-1")
    c.buy("B2", "100", at(20))  # R-1 is past its 10-day window, but B1 can still come back
    assert "R-1" in c.state.redemptions
    returned = c.do("TransactionReturn", at(21), bill_number="B1", whole_bill=True)
    assert returned.ledger[0].shortfall == D("10.00")  # forgiven: the points had been redeemed
    c.buy("B3", "100", at(40))
    assert "R-1" not in c.state.redemptions and "B1" not in c.state.bills


def test_a_reversal_inside_its_window_puts_the_points_back() -> None:
    c = Customer(program())
    c.buy("B1", "100", at(1))
    c.redeem("5", at(2), redemption_id="R-1")
    reversed_ = c.do("RedemptionReversal", at(11, 9), redemption_id="R-1")
    assert reversed_.rejected is None and [e.kind for e in reversed_.ledger] == [LedgerKind.REVERSE]


def test_limits_keep_redemptions_beyond_the_reversal_window_while_they_count_them() -> None:
    limited = program(redeem_conditions=[{"code": "R", "limits": {"per_last_days": {"days": 20, "points": 12}}}])
    c = Customer(limited)
    c.buy("B1", "1000", at(1))
    c.redeem("10", at(2), redemption_id="R-1")
    c.buy("B2", "100", at(15))  # past the 10-day reversal window, inside the 20-day limit
    assert "R-1" in c.state.redemptions
    refused = c.redeem("5", at(16))
    assert refused.redemption_result is not None
    assert refused.redemption_result.reason_code == "past_days_limit_reached"
    c.buy("B3", "100", at(40))
    assert "R-1" not in c.state.redemptions  # no limit reads it, and the bill whose points it spent is gone


def test_without_windows_nothing_is_dropped() -> None:
    c = Customer(make_program())
    c.buy("B1", "100", at(1))
    c.redeem("10", at(2), redemption_id="R-1")
    c.buy("B2", "100", at(80))
    assert set(c.state.bills) == {"B1", "B2"} and set(c.state.redemptions) == {"R-1"}
    assert len(c.state.lots) == 2
    assert c.do("TransactionReturn", at(85), bill_number="B1", whole_bill=True).rejected is None


def test_dropping_changes_no_balance_and_no_output_before_the_windows_end() -> None:
    """The same activities under a program with windows and one without: identical outputs (the late return
    aside), balances and lots holding points."""
    plain, windowed = Customer(make_program()), Customer(program())
    steps: list[tuple[str, dict[str, Any]]] = []
    for day in range(1, 60, 3):
        steps.append(("buy", {"bill": f"B{day}", "amount": str(100 + day), "when": at(day)}))
        if day % 2:
            steps.append(("redeem", {"points": "4", "when": at(day, 12), "redemption_id": f"R{day}"}))
        if day % 9 == 1 and day > 1:
            steps.append(("return", {"bill_number": f"B{day - 3}", "whole_bill": True, "when": at(day, 14)}))
    for kind, args in steps:
        for customer in (plain, windowed):
            if kind == "buy":
                customer.buy(args["bill"], args["amount"], args["when"])
            elif kind == "redeem":
                customer.redeem(args["points"], args["when"], redemption_id=args["redemption_id"])
            else:
                customer.do("TransactionReturn", args["when"], bill_number=args["bill_number"], whole_bill=True)
    for a, b in zip(plain.outcomes, windowed.outcomes, strict=True):
        assert [e.model_dump_json() for e in a.ledger] == [e.model_dump_json() for e in b.ledger]
        assert a.balance_change == b.balance_change and a.redemption_result == b.redemption_result
    assert (plain.state.current, plain.state.promised) == (windowed.state.current, windowed.state.promised)
    assert len(windowed.state.lots) < len(plain.state.lots) and len(windowed.state.bills) < len(plain.state.bills)
    live = {lot.lot_id for lot in plain.state.lots if lot.remaining > 0}
    assert live <= lot_ids(windowed.state)


def test_lookback_of_limits_and_conditions() -> None:
    assert redemption_lookback_days(make_program()) == 0
    monthly = make_program(redeem_conditions=[{"code": "R", "limits": {"per_calendar_month": 100}}])
    assert redemption_lookback_days(monthly) == 32
    past = make_program(rule_sets={**earn_rules("BASE"), "PointsRedemption": [
        redeem_rule_set(when="customer.points_redeemed_in_past_days(45) < 100")]})
    assert redemption_lookback_days(past) == 46
    weekly = make_program(rule_sets={**earn_rules("BASE"), "PointsRedemption": [
        redeem_rule_set(when="currentCustomer.pointsRedeemedInCalendarWeek < 100")]})
    assert redemption_lookback_days(weekly) == 8
    computed = make_program(rule_sets={**earn_rules("BASE"), "PointsRedemption": [
        redeem_rule_set(when="customer.points_redeemed_in_past_days(3 + 4) < 100")]})
    assert redemption_lookback_days(computed) is None  # not a literal: kept forever


def test_windows_must_be_whole_positive_days() -> None:
    with pytest.raises(ProgramError, match="return_window_days"):
        make_program(retention={"return_window_days": 0})
    with pytest.raises(ProgramError, match="retention"):
        parse_program({"id": "x", "version": 1, "redeem_conditions": [{"code": "R"}],
                       "retention": {"keep": 3}})


def test_points_paid_for_a_bill_bought_elsewhere_come_back_only_inside_the_reversal_window() -> None:
    """A whole-bill return of a bill the engine never saw gives back the redemptions that paid for it: those
    are reversals, so they follow the reversal window whether or not they have been dropped yet."""
    c = Customer(program())
    c.buy("B1", "1000", at(1))
    c.redeem("10", at(2), redemption_id="R-1", bill_number="POS-9")
    c.redeem("10", at(2, 11), redemption_id="R-2", bill_number="POS-8")
    inside = c.do("TransactionReturn", at(5), bill_number="POS-9", whole_bill=True)
    assert inside.rejected is None and [e.kind for e in inside.ledger] == [LedgerKind.REVERSE]
    late = c.do("TransactionReturn", at(12, 11), bill_number="POS-8", whole_bill=True)  # same day: kept, late
    assert "R-2" in c.state.redemptions
    assert late.rejected is None and late.ledger == [] and "'POS-8'" in late.parked[0]  # only its purchase can help
