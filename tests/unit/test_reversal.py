"""Redemption reversal: consumed points go back to their own lots with their original expiry."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from loyalty_stream.engine.core import apply
from loyalty_stream.engine.state import new_state
from loyalty_stream.events.outputs import LedgerKind

from .conftest import activity
from .test_redeem import Customer, add_lot, make_program

D = Decimal
APRIL = "2024-04-01T00:00:00+00:00"
JULY = "2024-07-01T00:00:00+00:00"


def spent_customer() -> Customer:
    """Lots expiring 1 April (30) and 1 July (50), 40 redeemed on bill POS-1 as R-1 on 1 March."""
    state = new_state("c1", "default")
    add_lot(state, "april", "30", expires=APRIL)
    add_lot(state, "july", "50", expires=JULY)
    c = Customer(make_program(), state)
    c.redeem("40", "2024-03-01T10:00:00+00:00", redemption_id="R-1", bill_number="POS-1")
    assert c.state.current == D("40")
    return c


def test_reversal_restores_each_lot_with_its_original_expiry() -> None:
    c = spent_customer()
    outcome = c.do("RedemptionReversal", "2024-03-05T10:00:00+00:00", redemption_id="R-1")
    assert outcome.rejected is None
    assert [(e.kind, e.lot_id, e.amount, e.expires_at, e.balance_after) for e in outcome.ledger] == [
        (LedgerKind.REVERSE, "april", D("30"), datetime.fromisoformat(APRIL), D("70")),
        (LedgerKind.REVERSE, "july", D("10"), datetime.fromisoformat(JULY), D("80")),
    ]
    assert all(e.redemption_id == "R-1" and e.bill_number == "POS-1" for e in outcome.ledger)
    lots = {lot.lot_id: lot for lot in c.state.lots}
    assert (lots["april"].remaining, lots["july"].remaining) == (D("30"), D("50"))
    assert c.state.redeemed == D("0") and c.state.redemptions["R-1"].reversed
    # the restored points still expire on their original dates
    later = c.buy("B1", "0", "2024-04-02T00:00:00+00:00")
    assert [(e.kind, e.lot_id, e.amount) for e in later.ledger] == [(LedgerKind.EXPIRE, "april", D("-30"))]


def test_reversing_twice_does_nothing() -> None:
    c = spent_customer()
    c.do("RedemptionReversal", "2024-03-05T10:00:00+00:00", redemption_id="R-1")
    again = c.do("RedemptionReversal", "2024-03-06T10:00:00+00:00", redemption_id="R-1", bill_number="POS-1")
    assert again.ledger == [] and again.rejected is None and again.balance_change is None
    assert c.state.current == D("80")


def test_the_same_reversal_event_redelivered_is_a_duplicate() -> None:
    c = spent_customer()
    c.do("RedemptionReversal", "2024-03-05T10:00:00+00:00", redemption_id="R-1")
    event = activity("RedemptionReversal", "e2", "2024-03-05T10:00:00+00:00", redemption_id="R-1")
    again = apply(c.state, event, c.program)
    assert again.duplicate and again.ledger == []


def test_an_unknown_redemption_id_waits_for_it_and_is_given_up_with_the_reason() -> None:
    """The redemption may still be on its way on its own topic (see test_parking)."""
    c = spent_customer()
    outcome = c.do("RedemptionReversal", "2024-03-05T10:00:00+00:00", redemption_id="nope")
    assert outcome.rejected is None and "'nope'" in outcome.parked[0]
    assert outcome.ledger == [] and c.state.current == D("40")
    later = c.redeem("10", "2024-03-07T10:00:00+00:00", redemption_id="R-2")  # redemptions moved 2 days on
    [given_up] = later.given_up
    assert given_up.error_class == "unresolved_reference" and "'nope'" in given_up.reason
    assert c.state.parked == [] and c.state.current == D("30")


def test_bill_reference_must_match_when_both_sides_have_one() -> None:
    c = spent_customer()
    wrong = c.do("RedemptionReversal", "2024-03-05T10:00:00+00:00", redemption_id="R-1", bill_number="POS-2")
    assert wrong.rejected is not None and "POS-1" in wrong.rejected and c.state.current == D("40")
    right = c.do("RedemptionReversal", "2024-03-05T11:00:00+00:00", redemption_id="R-1", bill_number="POS-1")
    assert right.rejected is None and c.state.current == D("80")


def test_reversal_with_a_bill_of_a_redemption_made_without_one() -> None:
    state = new_state("c1", "default")
    add_lot(state, "a", "30")
    c = Customer(make_program(), state)
    c.redeem("10", "2024-03-01T10:00:00+00:00", redemption_id="R-2")
    outcome = c.do("RedemptionReversal", "2024-03-05T10:00:00+00:00", redemption_id="R-2", bill_number="X")
    assert outcome.rejected is None and c.state.current == D("30")


def test_points_whose_original_expiry_passed_come_back_and_expire_at_once() -> None:
    c = spent_customer()
    c.buy("B1", "0", "2024-04-10T10:00:00+00:00")  # nothing left of "april" to expire: it was all redeemed
    assert c.state.expired == D("0")
    outcome = c.do("RedemptionReversal", "2024-04-15T10:00:00+00:00", redemption_id="R-1")
    assert [(e.kind, e.lot_id, e.amount, e.balance_after) for e in outcome.ledger] == [
        (LedgerKind.REVERSE, "april", D("30"), D("70")),
        (LedgerKind.EXPIRE, "april", D("-30"), D("40")),
        (LedgerKind.REVERSE, "july", D("10"), D("50")),
    ]
    expire = outcome.ledger[1]
    assert expire.reason is not None and "2024-03-31" in expire.reason and "R-1" in expire.reason
    assert c.state.expired == D("30") and c.state.current == D("50")
    assert len({e.entry_id for e in c.ledger}) == len(c.ledger)


def test_reversal_frees_balance_for_a_new_redemption_from_the_same_lots() -> None:
    c = spent_customer()
    c.do("RedemptionReversal", "2024-03-05T10:00:00+00:00", redemption_id="R-1")
    again = c.redeem("40", "2024-03-06T10:00:00+00:00", redemption_id="R-3")
    assert [(e.lot_id, e.amount) for e in again.ledger] == [("april", D("-30")), ("july", D("-10"))]


def test_a_late_reversal_of_points_already_expired_in_processing_order_expires_them_once() -> None:
    c = spent_customer()
    c.buy("B1", "0", "2024-04-02T10:00:00+00:00")  # "april" has nothing left; "july" is untouched
    c.buy("B2", "0", "2024-07-02T10:00:00+00:00")  # "july" expires its 40
    late = c.do("RedemptionReversal", "2024-06-30T10:00:00+00:00", redemption_id="R-1")  # happened before
    assert [(e.kind, e.lot_id, e.amount) for e in late.ledger] == [
        (LedgerKind.REVERSE, "april", D("30")), (LedgerKind.EXPIRE, "april", D("-30")),
        (LedgerKind.REVERSE, "july", D("10")), (LedgerKind.EXPIRE, "july", D("-10"))]
    after = c.buy("B3", "0", "2024-07-03T10:00:00+00:00")
    assert after.ledger == [] and c.state.current == 0
    assert len({e.entry_id for e in c.ledger}) == len(c.ledger)
