"""Rolling expiry: a rolling event re-dates every live rolling lot to the expiry its condition gives for the
new event (never shorter), with or without points per the "roll even when 0 points are given" toggle."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from loyalty_stream.engine import lifecycle
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Outcome
from loyalty_stream.engine.state import CustomerState
from loyalty_stream.events.outputs import LedgerKind
from loyalty_stream.program.model import Program

from .conftest import activity, program_from

UTC = ZoneInfo("UTC")


def day(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


def program(conditions: list[str], *, roll_on_zero: bool = False, delay: int | None = None,
            reminders: list[int] | None = None) -> Program:
    """Earn conditions by code: R30/R60 rolling 30/60 days, M12 rolling 12 months, N30 fixed 30 days (not
    rolling); each gives 10% of the amount."""
    expiry = {
        "R30": {"based_on": "rolling_event_date", "unit": "days", "value": 30},
        "R60": {"based_on": "rolling_event_date", "unit": "days", "value": 60},
        "M12": {"based_on": "rolling_event_date", "unit": "months", "value": 12},
        "N30": {"based_on": "event_date", "unit": "days", "value": 30},
    }
    allocations = [{"type": "allocate", "condition": code} for code in conditions]
    data: dict[str, Any] = {
        "roll_expiry_on_zero_points": roll_on_zero,
        "earn_conditions": [{"code": code, "allocation": {"type": "prorated", "percent": 10}, "expiry": code,
                             "delay_days": delay} for code in conditions],
        "expiry_conditions": [{"code": code, **expiry[code]} for code in conditions],
        "rule_sets": {"TransactionAdd": [{"name": "earn", "rules": [{"name": "all", "when": "true",
                                                                     "actions": allocations}]}]},
    }
    if reminders is not None:
        data["reminders"] = {"days_before": reminders}
    return program_from(data)


def buy(state: CustomerState | None, prog: Program, event_id: str, when: str,
        amount: str = "1000") -> Outcome:
    return apply(state, activity("TransactionAdd", event_id, when, bill_number=event_id, amount=amount), prog)


def expiries(state: CustomerState) -> list[datetime | None]:
    return [lot.expires_at for lot in state.lots]


def test_worked_example_a_new_transaction_resets_all_rolling_points() -> None:
    prog = program(["R30"])
    first = buy(None, prog, "t1", "2021-06-10T12:00:00Z")
    assert expiries(first.state) == [day(2021, 7, 11)]  # expires on 10 Jul
    second = buy(first.state, prog, "t2", "2021-07-07T12:00:00Z")
    assert expiries(second.state) == [day(2021, 8, 7), day(2021, 8, 7)]  # all on 6 Aug (7 Jul + 30)
    assert second.ledger[0].kind == LedgerKind.EARN and len(second.ledger) == 1  # re-dating writes no entry
    assert lifecycle.next_due(second.state, prog) == day(2021, 8, 7)


def test_only_points_issued_by_rolling_strategies_are_extended() -> None:
    prog = program(["R30", "N30"])
    first = buy(None, prog, "t1", "2021-06-10T12:00:00Z")
    second = buy(first.state, prog, "t2", "2021-07-07T12:00:00Z")
    by_code = [(lot.condition_code, lot.source_event_id, lot.expires_at) for lot in second.state.lots]
    assert by_code == [
        ("R30", "t1", day(2021, 8, 7)), ("N30", "t1", day(2021, 7, 11)),
        ("R30", "t2", day(2021, 8, 7)), ("N30", "t2", day(2021, 8, 7)),
    ]


def test_each_rolling_lot_uses_its_own_condition() -> None:
    prog = program(["R30", "R60"])
    first = buy(None, prog, "t1", "2021-06-10T12:00:00Z")
    assert expiries(first.state) == [day(2021, 7, 11), day(2021, 8, 10)]
    second = buy(first.state, prog, "t2", "2021-07-07T12:00:00Z")
    assert expiries(second.state)[:2] == [day(2021, 8, 7), day(2021, 9, 6)]


def test_zero_point_purchase_worked_example_toggle_off_keeps_the_expiry() -> None:
    prog = program(["M12"], roll_on_zero=False)
    first = buy(None, prog, "t1", "2024-01-15T12:00:00Z")
    assert first.state.current == Decimal(100)
    assert expiries(first.state) == [day(2025, 2, 1)]  # expires on 31 Jan 2025
    zero = buy(first.state, prog, "t2", "2024-12-10T12:00:00Z", amount="0")
    assert zero.ledger == [] and expiries(zero.state) == [day(2025, 2, 1)]


def test_zero_point_purchase_worked_example_toggle_on_extends_to_december_2025() -> None:
    prog = program(["M12"], roll_on_zero=True)
    first = buy(None, prog, "t1", "2024-01-15T12:00:00Z")
    zero = buy(first.state, prog, "t2", "2024-12-10T12:00:00Z", amount="0")
    assert expiries(zero.state) == [day(2026, 1, 1)]  # expires on 31 Dec 2025


def test_rolling_never_shortens_an_expiry() -> None:
    prog = program(["R30"])
    first = buy(None, prog, "t1", "2021-07-07T12:00:00Z")
    late = buy(first.state, prog, "t0", "2021-06-20T12:00:00Z")  # a late event with an earlier time
    assert expiries(late.state) == [day(2021, 8, 7), day(2021, 7, 21)]


def test_expired_points_are_not_revived() -> None:
    prog = program(["R30"])
    first = buy(None, prog, "t1", "2021-06-10T12:00:00Z")
    later = buy(first.state, prog, "t2", "2021-07-15T12:00:00Z")
    assert [(e.kind, e.occurred_at) for e in later.ledger] == [
        (LedgerKind.EXPIRE, day(2021, 7, 11)), (LedgerKind.EARN, datetime(2021, 7, 15, 12, tzinfo=UTC))]
    assert later.state.lots[0].remaining == Decimal(0)
    assert later.state.current == Decimal(100)


def test_redemptions_and_scheduler_events_are_not_rolling_events() -> None:
    prog = program(["R30"], roll_on_zero=True)
    first = buy(None, prog, "t1", "2021-06-10T12:00:00Z")
    spent = apply(first.state, activity("PointsRedemption", "r1", "2021-07-01T12:00:00Z", points="10"), prog)
    assert expiries(spent.state) == [day(2021, 7, 11)]
    tick = apply(spent.state, activity("PointsExpiry", "p1", "2021-07-02T00:00:00Z",
                                       due_at="2021-07-02T00:00:00Z"), prog)
    assert expiries(tick.state) == [day(2021, 7, 11)]


def test_other_earning_activities_roll_with_the_toggle() -> None:
    prog = program(["R30"], roll_on_zero=True)
    first = buy(None, prog, "t1", "2021-06-10T12:00:00Z")
    update = apply(first.state, activity("CustomerUpdate", "u1", "2021-07-01T12:00:00Z"), prog)
    assert expiries(update.state) == [day(2021, 8, 1)]


def test_promised_rolling_points_roll_too() -> None:
    prog = program(["R30"], delay=14)
    first = buy(None, prog, "t1", "2021-06-10T12:00:00Z")
    second = buy(first.state, prog, "t2", "2021-06-20T12:00:00Z")
    assert [(lot.promised, lot.expires_at) for lot in second.state.lots] == [
        (True, day(2021, 7, 21)), (True, day(2021, 7, 21))]


def test_a_roll_restarts_reminders_for_the_new_date() -> None:
    prog = program(["R30"], reminders=[7])
    first = buy(None, prog, "t1", "2021-06-10T12:00:00Z")
    # The 7-day reminder of the 10 Jul group was due on 4 Jul.
    reminded = buy(first.state, prog, "t2", "2021-07-04T12:00:00Z", amount="0")
    assert [n.data["expires_on"] for n in reminded.notifications] == ["2021-07-10"]
    assert reminded.state.lots[0].reminded == (7,)
    rolled = buy(reminded.state, prog, "t3", "2021-07-07T12:00:00Z")
    assert rolled.state.lots[0].reminded == ()
    before_new = buy(rolled.state, prog, "t4", "2021-08-01T12:00:00Z", amount="0")
    assert [n.data["expires_on"] for n in before_new.notifications] == ["2021-08-06"]
