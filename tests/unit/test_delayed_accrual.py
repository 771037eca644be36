"""Delayed accrual: promised points become current the morning after event date + N days (local), and the
program's DelayedAccrual rule sets run at that conversion with outputs keyed by the due time."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from loyalty_stream.engine import lifecycle
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Outcome
from loyalty_stream.engine.state import CustomerState
from loyalty_stream.events.outputs import Bucket, LedgerKind, RedemptionStatus
from loyalty_stream.program.model import Program

from .conftest import activity, program_from

UTC = ZoneInfo("UTC")
LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")

ON_CONVERT: list[dict[str, Any]] = [
    {"name": "on-convert", "rules": [{"name": "available", "when": "true", "actions": [
        {"type": "convert"},
        {"type": "notify", "channel": "sms", "template": "points_available"},
        {"type": "issue_coupon", "series": "THANKS"},
        {"type": "upgrade_tier", "tier": "silver"},
    ]}]},
]


def program(delay: int = 1, *, tz: str = "Europe/London", accrual_rules: list[dict[str, Any]] | None = None,
            expiry: dict[str, Any] | None = None) -> Program:
    rule_sets: dict[str, Any] = {"TransactionAdd": [{"name": "earn", "rules": [
        {"name": "all", "when": "true", "actions": [{"type": "allocate", "condition": "E"}]}]}]}
    if accrual_rules is not None:
        rule_sets["DelayedAccrual"] = accrual_rules
    return program_from({
        "timezone": tz,
        "tiers": [{"name": "bronze", "threshold": 0}, {"name": "silver", "threshold": 1_000_000}],
        "earn_conditions": [{"code": "E", "allocation": {"type": "fixed", "points": 100}, "delay_days": delay,
                             "expiry": "X" if expiry else None}],
        "expiry_conditions": [{"code": "X", **expiry}] if expiry else [],
        "rule_sets": rule_sets,
    })


def buy(state: CustomerState | None, prog: Program, event_id: str, when: str) -> Outcome:
    return apply(state, activity("TransactionAdd", event_id, when, bill_number=event_id, amount="10"), prog)


def redeem(state: CustomerState, prog: Program, event_id: str, when: str, points: str) -> Outcome:
    return apply(state, activity("PointsRedemption", event_id, when, points=points), prog)


def due_event(kind: str, event_id: str, at: datetime) -> Any:
    return activity(kind, event_id, at.isoformat(), due_at=at.isoformat())


@pytest.mark.parametrize(("when", "delay", "tz", "expected"), [
    ("2024-09-28T15:00:00+01:00", 1, "Europe/London", "2024-09-30T00:00:00+01:00"),  # the document's example
    ("2024-09-28T23:59:59+01:00", 0, "Europe/London", "2024-09-29T00:00:00+01:00"),
    ("2024-09-28T23:30:00Z", 1, "Europe/London", "2024-10-01T00:00:00+01:00"),  # already 29 Sep in London
    ("2024-10-26T12:00:00+01:00", 1, "Europe/London", "2024-10-28T00:00:00+00:00"),  # BST -> GMT
    ("2024-03-08T12:00:00-05:00", 2, "America/New_York", "2024-03-11T00:00:00-04:00"),  # EST -> EDT
    ("2024-03-09T12:00:00-05:00", 0, "America/New_York", "2024-03-10T00:00:00-05:00"),  # day of the change
    ("2024-02-28T12:00:00Z", 1, "UTC", "2024-03-01T00:00:00+00:00"),  # leap day counted
])
def test_available_the_morning_after_event_date_plus_n_days(
    when: str, delay: int, tz: str, expected: str,
) -> None:
    at = datetime.fromisoformat(when)
    assert lifecycle.available_after(at, delay, ZoneInfo(tz)).isoformat() == expected


def test_worked_example_28_sep_plus_1_day_converts_on_the_morning_of_30_sep() -> None:
    prog = program(1)
    earned = buy(None, prog, "t1", "2024-09-28T15:00:00+01:00")
    [promise] = earned.ledger
    assert (promise.kind, promise.bucket, promise.amount) == (
        LedgerKind.PROMISE, Bucket.PROMISED, Decimal(100))
    assert promise.available_at == datetime(2024, 9, 30, tzinfo=LONDON)
    assert (earned.state.current, earned.state.promised) == (Decimal(0), Decimal(100))
    due = lifecycle.Due(datetime(2024, 9, 30, tzinfo=LONDON), "DelayedAccrual")
    assert lifecycle.next_transition(earned.state, prog) == due
    # Promised points are not redeemable, up to the last second of 29 Sep.
    refused = redeem(earned.state, prog, "r1", "2024-09-29T23:59:59+01:00", "50")
    assert refused.redemption_result is not None
    assert refused.redemption_result.status == RedemptionStatus.REJECTED
    assert refused.ledger == []
    # At 00:00 on 30 Sep they are current: the awarded date is the conversion time.
    spent = redeem(refused.state, prog, "r2", "2024-09-30T00:00:00+01:00", "50")
    convert, debit = spent.ledger
    assert (convert.kind, convert.amount, convert.occurred_at) == (
        LedgerKind.CONVERT, Decimal(100), datetime(2024, 9, 30, tzinfo=LONDON))
    assert (convert.balance_after, convert.promised_after) == (Decimal(100), Decimal(0))
    assert (convert.source_type, convert.source_event_id, convert.source) == ("DelayedAccrual", "t1", None)
    assert (debit.kind, debit.balance_after) == (LedgerKind.REDEEM, Decimal(50))
    assert lifecycle.next_due(spent.state, prog) is None


def test_scheduler_event_and_next_activity_give_the_same_conversion_entry() -> None:
    prog = program(1)
    earned = buy(None, prog, "t1", "2024-09-28T15:00:00+01:00")
    due = lifecycle.next_due(earned.state, prog)
    assert due is not None
    ticked = apply(earned.state, due_event("DelayedAccrual", "sched-1", due), prog)
    lazy = buy(earned.state, prog, "t2", "2024-10-05T10:00:00+01:00")
    assert ticked.ledger == lazy.ledger[:1]
    assert ticked.ledger[0].model_dump_json() == lazy.ledger[0].model_dump_json()
    # The scheduler event arriving late (after the customer's next activity) does nothing.
    late = apply(lazy.state, due_event("DelayedAccrual", "sched-1", due), prog)
    assert late.ledger == []


def test_dst_spring_forward_conversion_at_local_midnight() -> None:
    prog = program(2, tz="America/New_York")
    earned = buy(None, prog, "t1", "2024-03-08T12:00:00-05:00")
    assert earned.state.lots[0].available_at == datetime(2024, 3, 11, 4, tzinfo=UTC)
    still = buy(earned.state, prog, "t2", "2024-03-11T03:59:59Z")  # 23:59:59 EDT on 10 Mar
    assert LedgerKind.CONVERT not in [e.kind for e in still.ledger]
    now = buy(still.state, prog, "t3", "2024-03-11T04:00:00Z")
    first = now.ledger[0]
    assert (first.kind, first.lot_id, first.occurred_at.isoformat()) == (
        LedgerKind.CONVERT, earned.state.lots[0].lot_id, "2024-03-11T00:00:00-04:00")


def test_dst_fall_back_conversion_at_local_midnight() -> None:
    prog = program(1, tz="Europe/London")
    earned = buy(None, prog, "t1", "2024-10-26T12:00:00+01:00")
    assert earned.state.lots[0].available_at == datetime(2024, 10, 28, 0, tzinfo=UTC)
    still = buy(earned.state, prog, "t2", "2024-10-27T23:59:59Z")
    assert LedgerKind.CONVERT not in [e.kind for e in still.ledger]
    assert buy(still.state, prog, "t3", "2024-10-28T00:00:00Z").ledger[0].kind == LedgerKind.CONVERT


def test_delayed_accrual_rule_sets_run_at_conversion_with_ids_keyed_by_the_due_time() -> None:
    prog = program(1, accrual_rules=ON_CONVERT)
    earned = buy(None, prog, "t1", "2024-09-28T15:00:00+01:00")
    assert earned.notifications == [] and earned.coupons == [] and earned.tier_changes == []
    due = lifecycle.next_due(earned.state, prog)
    assert due is not None
    ticked = apply(earned.state, due_event("DelayedAccrual", "sched-1", due), prog)
    lazy = buy(earned.state, prog, "t2", "2024-10-05T10:00:00+01:00")
    for outcome in (ticked, lazy):
        note, upgraded = outcome.notifications  # the rule's message, then the tier policy's
        [coupon] = outcome.coupons
        [change] = outcome.tier_changes
        assert (note.template, upgraded.template, coupon.series, change.to_tier) == (
            "points_available", "tier_upgraded", "THANKS", "silver")
        assert note.occurred_at == upgraded.occurred_at == coupon.occurred_at == change.occurred_at == due
        assert note.cause_event_id == coupon.cause_event_id == change.cause_event_id != "sched-1"
    assert ticked.notifications == lazy.notifications
    assert ticked.coupons == lazy.coupons
    assert ticked.tier_changes == lazy.tier_changes
    assert ticked.state.tier == "silver"


def test_rule_sets_run_once_per_conversion_batch() -> None:
    prog = program(1, accrual_rules=[
        {"name": "on-convert", "rules": [{"name": "note", "when": "true", "actions": [
            {"type": "convert"}, {"type": "notify", "channel": "push", "template": "available"}]}]}])
    state = buy(None, prog, "t1", "2024-09-28T09:00:00+01:00").state
    state = buy(state, prog, "t2", "2024-09-28T18:00:00+01:00").state  # same morning: one batch
    state = buy(state, prog, "t3", "2024-09-29T10:00:00+01:00").state  # next morning: another
    later = buy(state, prog, "t4", "2024-10-05T10:00:00+01:00")
    assert [e.kind for e in later.ledger] == [LedgerKind.CONVERT] * 3 + [LedgerKind.PROMISE]
    assert [n.occurred_at for n in later.notifications] == [
        datetime(2024, 9, 30, tzinfo=LONDON), datetime(2024, 10, 1, tzinfo=LONDON)]
    assert len({n.notification_id for n in later.notifications}) == 2


def test_rule_sets_that_do_not_fire_leave_the_conversion_alone() -> None:
    prog = program(1, accrual_rules=[{"name": "never", "rules": [
        {"name": "off", "when": "false", "actions": [{"type": "convert"}]}]}])
    earned = buy(None, prog, "t1", "2024-09-28T15:00:00+01:00")
    later = buy(earned.state, prog, "t2", "2024-10-05T10:00:00+01:00")
    assert later.ledger[0].kind == LedgerKind.CONVERT and later.notifications == []


def test_expiry_of_promised_points_counts_from_the_event_date() -> None:
    prog = program(3, expiry={"based_on": "event_date", "unit": "days", "value": 10}, tz="UTC")
    earned = buy(None, prog, "t1", "2024-07-01T10:00:00Z")
    lot = earned.state.lots[0]
    assert lot.available_at == datetime(2024, 7, 5, tzinfo=UTC)
    assert lot.expires_at == datetime(2024, 7, 12, tzinfo=UTC)
    assert earned.ledger[0].expires_at == datetime(2024, 7, 12, tzinfo=UTC)
    later = buy(earned.state, prog, "t2", "2024-07-20T10:00:00Z")
    assert [(e.kind, e.occurred_at.date(), e.amount) for e in later.ledger[:2]] == [
        (LedgerKind.CONVERT, date(2024, 7, 5), Decimal(100)),
        (LedgerKind.EXPIRE, date(2024, 7, 12), Decimal(-100)),
    ]


def test_points_expiring_before_their_conversion_leave_the_promised_bucket() -> None:
    prog = program(10, expiry={"based_on": "event_date", "unit": "days", "value": 3}, tz="UTC")
    earned = buy(None, prog, "t1", "2024-07-01T10:00:00Z")
    later = buy(earned.state, prog, "t2", "2024-07-20T10:00:00Z")
    expired = later.ledger[0]
    assert (expired.kind, expired.bucket, expired.amount, expired.promised_after) == (
        LedgerKind.EXPIRE, Bucket.PROMISED, Decimal(-100), Decimal(0))
    # Nothing is left to convert on 11 Jul.
    assert [e.kind for e in later.ledger] == [LedgerKind.EXPIRE, LedgerKind.PROMISE]
    assert later.state.expired == Decimal(100)


def test_rule_conditions_see_the_points_of_the_conversion_batch() -> None:
    prog = program(1, tz="UTC", accrual_rules=[{"name": "size", "rules": [
        {"name": "big", "when": "accrual.points >= 150",
         "actions": [{"type": "notify", "channel": "sms", "template": "big"}]},
        {"name": "small", "when": "true",
         "actions": [{"type": "notify", "channel": "sms", "template": "small"}]},
    ]}])
    one = buy(None, prog, "t1", "2024-09-28T10:00:00Z").state
    assert [n.template for n in buy(one, prog, "x", "2024-10-05T10:00:00Z").notifications] == ["small"]
    two = buy(one, prog, "t2", "2024-09-28T11:00:00Z").state  # same morning: one batch of 200
    assert [n.template for n in buy(two, prog, "x", "2024-10-05T10:00:00Z").notifications] == ["big"]
