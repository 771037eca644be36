"""Points unlock: promised points of a bill (or of named line items) become current at once."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from loyalty_stream.engine import lifecycle
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.state import CustomerState, Lot
from loyalty_stream.events.outputs import LedgerKind
from loyalty_stream.program.model import Program

from .conftest import activity, program_from

UTC = ZoneInfo("UTC")
EARNED = datetime(2024, 5, 1, 10, tzinfo=UTC)
AVAILABLE = datetime(2024, 5, 9, tzinfo=UTC)


def program(accrual_rules: list[dict[str, Any]] | None = None) -> Program:
    rule_sets: dict[str, Any] = {"TransactionAdd": [{"name": "earn", "rules": [
        {"name": "all", "when": "true", "actions": [{"type": "allocate", "condition": "E"}]}]}]}
    if accrual_rules is not None:
        rule_sets["DelayedAccrual"] = accrual_rules
    return program_from({
        "earn_conditions": [{"code": "E", "allocation": {"type": "fixed", "points": 100}, "delay_days": 7}],
        "rule_sets": rule_sets,
    })


def line_lot(item: str, points: int, bill: str = "B1") -> Lot:
    return Lot(lot_id=f"lot-{bill}-{item}", points=Decimal(points), remaining=Decimal(points), promised=True,
               earned_at=EARNED, available_at=AVAILABLE, expires_at=None, source_event_id=f"t-{bill}",
               bill_number=bill, line_item_id=item)


def line_state() -> CustomerState:
    """Promised points earned per line item (as line-level allocation creates them)."""
    state = CustomerState(customer_id="c1", program_id="default", tier="base")
    state.lots = [line_lot("i1", 10), line_lot("i2", 20), line_lot("i3", 30), line_lot("i1", 40, bill="B2")]
    state.lifetime_earned = Decimal(100)
    return state


def unlock(state: CustomerState | None, prog: Program, event_id: str, when: str, bill: str,
           items: list[str] | None = None) -> Any:
    payload: dict[str, Any] = {"bill_number": bill}
    if items is not None:
        payload["item_ids"] = items
    return apply(state, activity("PointsUnlock", event_id, when, **payload), prog)


def test_whole_bill_unlock_converts_now_and_ends_the_wait() -> None:
    prog = program()
    earned = apply(None, activity("TransactionAdd", "t1", "2024-05-01T10:00:00Z", bill_number="B1",
                                  amount="10"), prog)
    other = apply(earned.state, activity("TransactionAdd", "t2", "2024-05-01T11:00:00Z", bill_number="B2",
                                         amount="10"), prog)
    unlocked = unlock(other.state, prog, "u1", "2024-05-03T15:00:00Z", "B1")
    [entry] = unlocked.ledger
    assert (entry.kind, entry.amount, entry.reason) == (LedgerKind.CONVERT, Decimal(100), "unlocked")
    assert (entry.source_event_id, entry.source_type) == ("u1", "PointsUnlock")
    assert entry.occurred_at == entry.available_at == datetime(2024, 5, 3, 15, tzinfo=UTC)
    assert (entry.balance_after, entry.promised_after) == (Decimal(100), Decimal(100))
    assert (unlocked.state.current, unlocked.state.promised) == (Decimal(100), Decimal(100))
    # B2 still converts on schedule; B1 is never converted a second time.
    later = apply(unlocked.state, activity("PointsExpiry", "p1", "2024-05-20T10:00:00Z",
                                           due_at="2024-05-20T10:00:00Z"), prog)
    assert [(e.kind, e.source_event_id) for e in later.ledger] == [(LedgerKind.CONVERT, "t2")]
    assert lifecycle.next_due(later.state, prog) is None


def test_line_item_unlock_converts_only_the_named_lines() -> None:
    prog = program()
    unlocked = unlock(line_state(), prog, "u1", "2024-05-03T15:00:00Z", "B1", ["i1", "i3"])
    assert [(e.lot_id, e.line_item_id, e.amount) for e in unlocked.ledger] == [
        ("lot-B1-i1", "i1", Decimal(10)), ("lot-B1-i3", "i3", Decimal(30))]
    assert (unlocked.state.current, unlocked.state.promised) == (Decimal(40), Decimal(60))
    # i1 of another bill is untouched; i2 keeps its return window and converts on schedule.
    assert lifecycle.next_due(unlocked.state, prog) == AVAILABLE
    due = apply(unlocked.state, activity("DelayedAccrual", "d1", AVAILABLE.isoformat(),
                                         due_at=AVAILABLE.isoformat()), prog)
    assert [e.lot_id for e in due.ledger] == ["lot-B1-i2", "lot-B2-i1"]


def test_unlocking_nothing_is_a_quiet_no_op_and_an_unknown_bill_waits_for_its_purchase() -> None:
    prog = program()
    unknown = unlock(line_state(), prog, "u1", "2024-05-03T15:00:00Z", "NOPE")
    assert (unknown.ledger, unknown.rejected) == ([], None) and "'NOPE'" in unknown.parked[0]  # see test_parking
    no_item = unlock(line_state(), prog, "u2", "2024-05-03T15:00:00Z", "B1", ["i9"])
    assert no_item.ledger == []
    after_due = unlock(line_state(), prog, "u3", "2024-05-10T15:00:00Z", "B1")
    assert [e.source_event_id for e in after_due.ledger] == ["t-B1"] * 3 + ["t-B2"]  # scheduled, not unlock


def test_redelivered_unlock_is_a_duplicate() -> None:
    prog = program()
    first = unlock(line_state(), prog, "u1", "2024-05-03T15:00:00Z", "B1")
    again = unlock(first.state, prog, "u1", "2024-05-03T15:00:00Z", "B1")
    assert again.duplicate and again.ledger == []


def test_unlock_does_not_run_delayed_accrual_rule_sets() -> None:
    prog = program([{"name": "n", "rules": [{"name": "r", "when": "true", "actions": [
        {"type": "notify", "channel": "sms", "template": "available"}]}]}])
    unlocked = unlock(line_state(), prog, "u1", "2024-05-03T15:00:00Z", "B1")
    assert len(unlocked.ledger) == 3 and unlocked.notifications == []
