"""Expiry reminders: one notification per expiry group and offset, N days before, on either path."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from loyalty_stream.engine import lifecycle
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Outcome
from loyalty_stream.engine.state import CustomerState
from loyalty_stream.events.outputs import Channel, LedgerKind
from loyalty_stream.program.model import Program

from .conftest import activity, program_from

UTC = ZoneInfo("UTC")
LONDON = ZoneInfo("Europe/London")


def program(days_before: list[int], *, tz: str = "UTC", unit: str = "months", value: int = 1) -> Program:
    return program_from({
        "timezone": tz,
        "rounding": {"decimals": 0},
        "reminders": {"days_before": days_before, "channel": "email", "template": "expiring_soon"},
        "earn_conditions": [{"code": "E", "allocation": {"type": "fixed", "points": 100}, "expiry": "X"}],
        "expiry_conditions": [{"code": "X", "based_on": "event_date", "unit": unit, "value": value}],
        "rule_sets": {"TransactionAdd": [{"name": "earn", "rules": [
            {"name": "all", "when": "true", "actions": [{"type": "allocate", "condition": "E"}]}]}]},
    })


def buy(state: CustomerState | None, prog: Program, event_id: str, when: str) -> Outcome:
    return apply(state, activity("TransactionAdd", event_id, when, bill_number=event_id, amount="10"), prog)


def tick(state: CustomerState, prog: Program, at: datetime, kind: str = "PointsExpiry") -> Outcome:
    return apply(state, activity(kind, f"tick-{at.isoformat()}", at.isoformat(), due_at=at.isoformat()), prog)


def summary(outcome: Outcome) -> list[tuple[datetime, dict[str, str]]]:
    return [(n.occurred_at, n.data) for n in outcome.notifications]


def test_reminders_30_and_7_days_before_then_expiry_on_the_scheduler_path() -> None:
    prog = program([30, 7])
    state = buy(None, prog, "t1", "2021-07-10T12:00:00Z").state  # expires on 31 Aug
    state = buy(state, prog, "t2", "2021-07-20T12:00:00Z").state  # same group
    dues = []
    outcomes = []
    while (due := lifecycle.next_transition(state, prog)) is not None:
        dues.append(due)
        outcome = tick(state, prog, due.at)
        outcomes.append(outcome)
        state = outcome.state
    assert dues == [lifecycle.Due(datetime(2021, 8, 2, tzinfo=UTC), "PointsExpiry"),
                    lifecycle.Due(datetime(2021, 8, 25, tzinfo=UTC), "PointsExpiry"),
                    lifecycle.Due(datetime(2021, 9, 1, tzinfo=UTC), "PointsExpiry")]
    thirty, seven, gone = outcomes
    assert summary(thirty) == [(datetime(2021, 8, 2, tzinfo=UTC),
                                {"points": "200", "expires_on": "2021-08-31", "days_before": "30"})]
    assert summary(seven) == [(datetime(2021, 8, 25, tzinfo=UTC),
                               {"points": "200", "expires_on": "2021-08-31", "days_before": "7"})]
    note = thirty.notifications[0]
    assert (note.channel, note.template, thirty.ledger) == (Channel.EMAIL, "expiring_soon", [])
    assert [e.kind for e in gone.ledger] == [LedgerKind.EXPIRE, LedgerKind.EXPIRE]
    assert gone.notifications == []
    assert [lot.reminded for lot in state.lots] == [(30, 7), (30, 7)]


def test_lazy_catch_up_gives_the_same_reminders_in_order() -> None:
    prog = program([30, 7])
    first = buy(None, prog, "t1", "2021-07-10T12:00:00Z")
    scheduled = tick(first.state, prog, datetime(2021, 8, 2, tzinfo=UTC))
    scheduled_7 = tick(scheduled.state, prog, datetime(2021, 8, 25, tzinfo=UTC))
    lazy = buy(first.state, prog, "t2", "2021-09-05T12:00:00Z")
    assert lazy.notifications == scheduled.notifications + scheduled_7.notifications
    assert [e.kind for e in lazy.ledger] == [LedgerKind.EXPIRE, LedgerKind.EARN]


def test_each_group_and_offset_is_reminded_once() -> None:
    prog = program([7])
    first = buy(None, prog, "t1", "2021-07-10T12:00:00Z")
    reminded = tick(first.state, prog, datetime(2021, 8, 25, tzinfo=UTC))
    again = tick(reminded.state, prog, datetime(2021, 8, 26, tzinfo=UTC))
    assert len(reminded.notifications) == 1 and again.notifications == []
    later = buy(again.state, prog, "t2", "2021-08-27T12:00:00Z")  # a new group (30 Sep)
    assert later.notifications == []
    assert lifecycle.next_due(later.state, prog) == datetime(2021, 9, 1, tzinfo=UTC)


def test_groups_are_reminded_separately_with_ids_keyed_by_group_and_offset() -> None:
    prog = program([7], unit="days", value=10)
    state = buy(None, prog, "t1", "2021-07-01T12:00:00Z").state  # expires on 11 Jul
    state = buy(state, prog, "t2", "2021-07-02T12:00:00Z").state  # expires on 12 Jul
    caught_up = buy(state, prog, "t3", "2021-07-20T12:00:00Z")
    assert [(n.occurred_at.day, n.data["expires_on"]) for n in caught_up.notifications] == [
        (5, "2021-07-11"), (6, "2021-07-12")]
    assert len({n.notification_id for n in caught_up.notifications}) == 2
    assert {n.cause_event_id for n in caught_up.notifications}.isdisjoint({"t3"})


def test_no_reminder_for_an_offset_already_past_when_the_points_were_earned() -> None:
    prog = program([30, 7])
    first = buy(None, prog, "t1", "2021-08-10T12:00:00Z")  # expires on 30 Sep; 30-day reminder was 1 Sep
    assert lifecycle.next_due(first.state, prog) == datetime(2021, 9, 1, tzinfo=UTC)
    late = buy(None, prog, "t1", "2021-09-20T12:00:00Z")  # expires on 31 Oct
    assert lifecycle.next_due(late.state, prog) == datetime(2021, 10, 2, tzinfo=UTC)
    short = program([30, 7], unit="days", value=5)
    soon = buy(None, short, "t1", "2021-08-10T12:00:00Z")  # expires on 15 Aug: both offsets already past
    assert lifecycle.next_transition(soon.state, short) == lifecycle.Due(datetime(2021, 8, 16, tzinfo=UTC),
                                                                         "PointsExpiry")


def test_spent_points_are_not_reminded() -> None:
    prog = program([7])
    first = buy(None, prog, "t1", "2021-07-10T12:00:00Z")
    spent = apply(first.state, activity("PointsRedemption", "r1", "2021-07-11T12:00:00Z", points="100"), prog)
    assert lifecycle.next_due(spent.state, prog) is None
    assert tick(spent.state, prog, datetime(2021, 8, 25, tzinfo=UTC)).notifications == []


def test_reminder_is_at_local_midnight_across_dst() -> None:
    prog = program([7], tz="Europe/London", unit="days", value=20)
    first = buy(None, prog, "t1", "2024-10-11T12:00:00+01:00")  # expires on 31 Oct (GMT), remind 25 Oct (BST)
    assert first.state.lots[0].expires_at == datetime(2024, 11, 1, tzinfo=UTC)
    assert lifecycle.next_due(first.state, prog) == datetime(2024, 10, 25, tzinfo=LONDON)
    assert lifecycle.next_due(first.state, prog) == datetime(2024, 10, 24, 23, tzinfo=UTC)
    before = buy(first.state, prog, "t2", "2024-10-24T22:59:59Z")
    assert before.notifications == []
    at = buy(before.state, prog, "t3", "2024-10-24T23:00:00Z")
    assert [(n.occurred_at.isoformat(), n.data["expires_on"]) for n in at.notifications] == [
        ("2024-10-25T00:00:00+01:00", "2024-10-31")]


def test_a_program_without_reminders_sends_none() -> None:
    prog = program([])
    first = buy(None, prog, "t1", "2021-07-10T12:00:00Z")
    assert lifecycle.next_due(first.state, prog) == datetime(2021, 9, 1, tzinfo=UTC)
    assert buy(first.state, prog, "t2", "2021-09-05T12:00:00Z").notifications == []
