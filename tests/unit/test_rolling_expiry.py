"""Rolling expiry: a rolling event re-dates every live rolling lot to the expiry its condition gives for the
new event (never shorter), with or without points per the "roll even when 0 points are given" toggle."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from loyalty_stream.engine import lifecycle
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Outcome
from loyalty_stream.engine.history import describe
from loyalty_stream.engine.state import CustomerState
from loyalty_stream.events.outputs import Bucket, LedgerEntry, LedgerKind
from loyalty_stream.program.model import Program

from .conftest import activity, program_from

UTC = ZoneInfo("UTC")

pytestmark = pytest.mark.usefixtures("verify_running_balances")


def day(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


def program(conditions: list[str], *, roll_on_zero: bool = False, delay: int | None = None,
            reminders: list[int] | None = None, tiers: list[dict[str, Any]] | None = None) -> Program:
    """Earn conditions by code: R30/R60 rolling 30/60 days, M12 rolling 12 months, N30 fixed 30 days (not
    rolling), RT rolling 30 days for bronze only (silver never expires); each gives 10% of the amount."""
    expiry: dict[str, dict[str, Any]] = {
        "R30": {"based_on": "rolling_event_date", "unit": "days", "value": 30},
        "RT": {"based_on": "rolling_event_date", "unit": "days", "value": {"bronze": 30}},
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
    if tiers is not None:
        data["tiers"] = tiers
    return program_from(data)


def buy(state: CustomerState | None, prog: Program, event_id: str, when: str,
        amount: str = "1000") -> Outcome:
    return apply(state, activity("TransactionAdd", event_id, when, bill_number=event_id, amount=amount), prog)


def expiries(state: CustomerState) -> list[datetime | None]:
    return [lot.expires_at for lot in state.lots]


def redates(outcome: Outcome) -> list[LedgerEntry]:
    return [e for e in outcome.ledger if e.kind == LedgerKind.REDATE]


def test_worked_example_a_new_transaction_resets_all_rolling_points() -> None:
    prog = program(["R30"])
    first = buy(None, prog, "t1", "2021-06-10T12:00:00Z")
    assert expiries(first.state) == [day(2021, 7, 11)]  # expires on 10 Jul
    second = buy(first.state, prog, "t2", "2021-07-07T12:00:00Z")
    assert expiries(second.state) == [day(2021, 8, 7), day(2021, 8, 7)]  # all on 6 Aug (7 Jul + 30)
    earn, moved = second.ledger
    assert earn.kind == LedgerKind.EARN
    # t1's lot is re-dated in the ledger; t2's own lot already has the new date, so it gets no entry.
    assert (moved.kind, moved.amount, moved.bucket, moved.lot_id, moved.expires_at) == (
        LedgerKind.REDATE, Decimal(0), Bucket.CURRENT, first.state.lots[0].lot_id, day(2021, 8, 7))
    assert (moved.source_event_id, moved.occurred_at, moved.reason, moved.condition_code, moved.bill_number) == (
        "t2", datetime(2021, 7, 7, 12, tzinfo=UTC), "rolling expiry", "R30", "t1")
    assert (moved.seq, moved.balance_after, moved.promised_after) == (3, Decimal(200), Decimal(0))
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
    assert [(e.condition_code, e.expires_at) for e in redates(second)] == [
        ("R30", day(2021, 8, 7)), ("R60", day(2021, 9, 6))]


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
    [moved] = zero.ledger  # the only entry of a purchase that earned nothing
    assert (moved.kind, moved.amount, moved.expires_at) == (LedgerKind.REDATE, Decimal(0), day(2026, 1, 1))
    # Balances do not move, but the ledger did: a balance change carries the new seq (delta 0).
    change = zero.balance_change
    assert change is not None
    assert (change.seq, change.delta_current, change.current) == (moved.seq, Decimal(0), Decimal(100))


def test_rolling_never_shortens_an_expiry() -> None:
    prog = program(["R30"])
    first = buy(None, prog, "t1", "2021-07-07T12:00:00Z")
    late = buy(first.state, prog, "t0", "2021-06-20T12:00:00Z")  # a late event with an earlier time
    assert expiries(late.state) == [day(2021, 8, 7), day(2021, 7, 21)]
    assert redates(late) == []  # nothing moved, nothing written


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
    [moved] = redates(second)
    assert (moved.bucket, moved.amount, moved.expires_at, moved.promised_after) == (
        Bucket.PROMISED, Decimal(0), day(2021, 7, 21), Decimal(200))


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


def test_a_rolling_event_that_gives_the_same_date_writes_nothing() -> None:
    prog = program(["R30"])
    first = buy(None, prog, "t1", "2021-06-10T09:00:00Z")
    same_day = buy(first.state, prog, "t2", "2021-06-10T18:00:00Z")
    assert expiries(same_day.state) == [day(2021, 7, 11), day(2021, 7, 11)]
    assert [e.kind for e in same_day.ledger] == [LedgerKind.EARN]


def test_every_move_of_a_lot_is_an_entry_with_its_own_deterministic_id() -> None:
    prog = program(["R30"])

    def run() -> list[Outcome]:
        outcomes = [buy(None, prog, "t1", "2021-06-10T12:00:00Z")]
        for event_id, when in (("t2", "2021-06-20T12:00:00Z"), ("t3", "2021-07-01T12:00:00Z")):
            outcomes.append(buy(outcomes[-1].state, prog, event_id, when))
        return outcomes

    outcomes = run()
    moves = [e for outcome in outcomes for e in redates(outcome)]
    lot_ids = [lot.lot_id for lot in outcomes[-1].state.lots]
    assert [(e.lot_id, e.expires_at) for e in moves] == [
        (lot_ids[0], day(2021, 7, 21)), (lot_ids[0], day(2021, 8, 1)), (lot_ids[1], day(2021, 8, 1))]
    ids = [e.entry_id for outcome in outcomes for e in outcome.ledger]
    assert len(set(ids)) == len(ids)
    assert ids == [e.entry_id for outcome in run() for e in outcome.ledger]  # a replay gives the same ids
    # Replaying the moves from the ledger alone gives every lot's expiry.
    replayed = {e.lot_id: e.expires_at for outcome in outcomes for e in outcome.ledger}
    assert replayed == {lot.lot_id: lot.expires_at for lot in outcomes[-1].state.lots}


def test_a_roll_to_a_tier_without_expiry_removes_it_in_the_ledger() -> None:
    prog = program(["RT"], roll_on_zero=True,
                   tiers=[{"name": "bronze", "threshold": 0}, {"name": "silver", "threshold": 1_000_000}])
    first = buy(None, prog, "t1", "2021-06-10T12:00:00Z")
    assert expiries(first.state) == [day(2021, 7, 11)]
    upgraded = apply(first.state, activity("Registration", "r1", "2021-06-15T12:00:00Z", tier="silver"), prog)
    assert expiries(upgraded.state) == [None]
    [moved] = redates(upgraded)
    assert (moved.expires_at, moved.amount, moved.lot_id) == (None, Decimal(0), first.state.lots[0].lot_id)
    assert "no longer expire" in describe(moved)
    again = apply(upgraded.state, activity("CustomerUpdate", "u1", "2021-06-16T12:00:00Z"), prog)
    assert again.ledger == []  # a lot that never expires is not rolled
