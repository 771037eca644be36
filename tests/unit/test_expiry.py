"""Expiry strategies and time units: every worked example of the document, month ends, leap years, zones.

"Expires on D" means usable through D, gone at 00:00 local of D+1 (`Lot.expires_at` is that instant).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from loyalty_stream.engine import expiry, lifecycle
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Outcome
from loyalty_stream.engine.state import CustomerState
from loyalty_stream.events.outputs import Bucket, LedgerKind
from loyalty_stream.program.loader import ProgramError
from loyalty_stream.program.model import Program

from .conftest import activity, program_from

UTC = ZoneInfo("UTC")
LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")


def program(condition: dict[str, Any] | None, *, tz: str = "UTC", **extra: Any) -> Program:
    """Earn 100 points per purchase under expiry condition X (`condition`), or with no expiry at all."""
    data: dict[str, Any] = {
        "timezone": tz,
        "tiers": [{"name": "bronze", "threshold": 0}, {"name": "silver", "threshold": 1_000_000}],
        "earn_conditions": [{"code": "E", "allocation": {"type": "fixed", "points": 100},
                             "expiry": "X" if condition is not None else None}],
        "expiry_conditions": [{"code": "X", **condition}] if condition is not None else [],
        "rule_sets": {"TransactionAdd": [{"name": "earn", "rules": [
            {"name": "all", "when": "true", "actions": [{"type": "allocate", "condition": "E"}]}]}]},
    }
    data.update(extra)
    return program_from(data)


def buy(state: CustomerState | None, prog: Program, event_id: str, when: str, **fields: Any) -> Outcome:
    purchase = activity("TransactionAdd", event_id, when, bill_number=event_id, amount="10", **fields)
    return apply(state, purchase, prog)


def expires(prog: Program, when: str, state: CustomerState | None = None, **fields: Any) -> datetime | None:
    """expires_at of the lot a purchase at `when` creates."""
    outcome = buy(state, prog, "t-exp", when, **fields)
    return outcome.state.lots[-1].expires_at


def scheduler_event(event_id: str, when: str) -> Any:
    return activity("PointsExpiry", event_id, when, due_at=when)


def local(y: int, m: int, d: int, zone: ZoneInfo = UTC) -> datetime:
    return datetime(y, m, d, tzinfo=zone)


# Calendar arithmetic ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("start", "months", "expected"), [
    (date(2021, 7, 10), 1, date(2021, 8, 31)),  # the document's example
    (date(2023, 1, 31), 1, date(2023, 2, 28)),
    (date(2024, 1, 31), 1, date(2024, 2, 29)),  # leap year
    (date(2024, 2, 29), 12, date(2025, 2, 28)),
    (date(2024, 12, 15), 1, date(2025, 1, 31)),  # across the year end
    (date(2024, 11, 30), 3, date(2025, 2, 28)),
    (date(2021, 7, 10), 0, date(2021, 7, 31)),
    (date(2024, 3, 31), 25, date(2026, 4, 30)),
])
def test_months_end_on_the_last_day_of_the_month(start: date, months: int, expected: date) -> None:
    assert expiry.last_day_of_month_after(start, months) == expected


@pytest.mark.parametrize(("registered", "after", "expected"), [
    (date(2023, 3, 15), date(2024, 6, 1), date(2025, 3, 15)),
    (date(2023, 3, 15), date(2024, 3, 14), date(2024, 3, 15)),
    (date(2023, 3, 15), date(2024, 3, 15), date(2025, 3, 15)),  # strictly after the event date
    (date(2023, 3, 15), date(2023, 3, 15), date(2024, 3, 15)),  # earning on the registration day
    (date(2023, 3, 15), date(2022, 1, 1), date(2024, 3, 15)),  # earned before registering: first anniversary
    (date(2024, 2, 29), date(2024, 3, 1), date(2025, 2, 28)),  # 29 Feb -> 28 Feb in common years
    (date(2024, 2, 29), date(2027, 3, 1), date(2028, 2, 29)),
])
def test_registration_anniversary(registered: date, after: date, expected: date) -> None:
    assert expiry.anniversary_after(registered, after) == expected


def test_end_of_and_expiry_date_are_inverse_across_dst() -> None:
    # BST ends on 27 Oct 2024: the 27th starts at +01:00, the 28th at +00:00.
    assert expiry.end_of(date(2024, 10, 26), LONDON).isoformat() == "2024-10-27T00:00:00+01:00"
    assert expiry.end_of(date(2024, 10, 27), LONDON).isoformat() == "2024-10-28T00:00:00+00:00"
    for day in (date(2024, 10, 26), date(2024, 10, 27), date(2024, 3, 30), date(2024, 3, 31)):
        assert expiry.expiry_date(expiry.end_of(day, LONDON), LONDON) == day


def test_local_midnight_inside_a_dst_gap_is_the_real_start_of_the_day() -> None:
    # Santiago skips 00:00-01:00 on 8 Sep 2024: the day starts at 01:00 -03:00.
    zone = ZoneInfo("America/Santiago")
    assert expiry.local_midnight(date(2024, 9, 8), zone).isoformat() == "2024-09-08T01:00:00-03:00"


# Event date: days, months, date, never -------------------------------------------------------------
def test_days_worked_example_1_jul_plus_10_days_expires_on_11_jul() -> None:
    prog = program({"based_on": "event_date", "unit": "days", "value": 10})
    first = buy(None, prog, "t1", "2021-07-01T09:00:00Z")
    lot = first.state.lots[0]
    assert lot.expires_at == local(2021, 7, 12)
    assert expiry.expiry_date(lot.expires_at, prog.zone) == date(2021, 7, 11)
    assert first.ledger[0].expires_at == local(2021, 7, 12)
    # Still there at the last moment of 11 Jul, gone at 00:00 on 12 Jul.
    late = apply(first.state, scheduler_event("p1", "2021-07-11T23:59:59Z"), prog)
    assert late.ledger == [] and late.state.current == Decimal(100)
    gone = apply(late.state, scheduler_event("p2", "2021-07-12T00:00:00Z"), prog)
    [entry] = gone.ledger
    assert (entry.kind, entry.amount, entry.occurred_at) == (
        LedgerKind.EXPIRE, Decimal(-100), local(2021, 7, 12))
    assert (entry.balance_after, gone.state.expired, entry.source_type) == (
        Decimal(0), Decimal(100), "PointsExpiry")


def test_months_worked_example_10_jul_plus_1_month_expires_on_31_aug() -> None:
    prog = program({"based_on": "event_date", "unit": "months", "value": 1})
    assert expires(prog, "2021-07-10T12:00:00Z") == local(2021, 9, 1)


@pytest.mark.parametrize(("when", "months", "last_day"), [
    ("2023-01-31T10:00:00Z", 1, date(2023, 2, 28)),
    ("2024-01-31T10:00:00Z", 1, date(2024, 2, 29)),
    ("2024-02-29T10:00:00Z", 12, date(2025, 2, 28)),
    ("2024-12-31T10:00:00Z", 2, date(2025, 2, 28)),
])
def test_months_at_month_ends_and_leap_years(when: str, months: int, last_day: date) -> None:
    prog = program({"based_on": "event_date", "unit": "months", "value": months})
    at = expires(prog, when)
    assert at is not None and expiry.expiry_date(at, prog.zone) == last_day


@pytest.mark.parametrize(("when", "last_day"), [
    ("2024-02-28T10:00:00Z", date(2024, 2, 29)),  # leap day exists
    ("2023-02-28T10:00:00Z", date(2023, 3, 1)),
    ("2024-02-29T10:00:00Z", date(2024, 3, 1)),
])
def test_days_across_leap_day(when: str, last_day: date) -> None:
    prog = program({"based_on": "event_date", "unit": "days", "value": 1})
    at = expires(prog, when)
    assert at is not None and expiry.expiry_date(at, prog.zone) == last_day


def test_date_unit_worked_example_expires_on_the_configured_date() -> None:
    prog = program({"based_on": "event_date", "unit": "date", "date": "2021-08-10"})
    assert expires(prog, "2021-06-01T10:00:00Z") == local(2021, 8, 11)


def test_date_unit_already_past_makes_the_points_expire_at_their_event_time() -> None:
    prog = program({"based_on": "event_date", "unit": "date", "date": "2021-08-10"})
    first = buy(None, prog, "t1", "2021-09-01T10:00:00Z")
    assert first.state.lots[0].expires_at == datetime(2021, 9, 1, 10, tzinfo=UTC)
    assert lifecycle.next_due(first.state, prog) == datetime(2021, 9, 1, 10, tzinfo=UTC)
    later = buy(first.state, prog, "t2", "2021-09-02T10:00:00Z")
    assert [(e.kind, e.amount, e.occurred_at) for e in later.ledger[:1]] == [
        (LedgerKind.EXPIRE, Decimal(-100), datetime(2021, 9, 1, 10, tzinfo=UTC))]


@pytest.mark.parametrize("condition", [
    {"based_on": "event_date", "unit": "never"},
    {"based_on": "event_date"},
    {"based_on": "membership_end", "unit": "never"},
])
def test_never_expiring_points_have_no_expiry_and_nothing_due(condition: dict[str, Any]) -> None:
    prog = program(condition)
    outcome = buy(None, prog, "t1", "2021-06-01T10:00:00Z")
    assert outcome.state.lots[0].expires_at is None
    assert lifecycle.next_due(outcome.state, prog) is None


def test_points_without_condition_use_the_programs_default_expiry() -> None:
    prog = program(None, expiry_conditions=[{"code": "D", "unit": "days", "value": 5}], default_expiry="D")
    outcome = buy(None, prog, "t1", "2021-06-01T10:00:00Z")
    lot = outcome.state.lots[0]
    assert (lot.expiry_code, lot.expires_at, lot.rolling) == ("D", local(2021, 6, 7), False)


def test_per_tier_values_use_the_customers_tier_and_a_missing_tier_never_expires() -> None:
    prog = program({"based_on": "event_date", "unit": "days", "value": {"bronze": 10, "silver": 30}})
    assert expires(prog, "2021-07-01T10:00:00Z") == local(2021, 7, 12)
    silver = apply(None, activity("Registration", "r1", "2021-06-01T10:00:00Z", tier="silver"), prog).state
    assert expires(prog, "2021-07-01T10:00:00Z", silver) == local(2021, 8, 1)
    only_silver = program({"based_on": "event_date", "unit": "days", "value": {"silver": 30}})
    assert expires(only_silver, "2021-07-01T10:00:00Z") is None


# Time zones and DST ----------------------------------------------------------------------------------
def test_the_event_date_is_the_local_date_in_the_programs_zone() -> None:
    london = program({"based_on": "event_date", "unit": "days", "value": 10}, tz="Europe/London")
    # 23:30 UTC on 30 Jun is 00:30 BST on 1 Jul: 1 Jul + 10 -> usable through 11 Jul (London).
    assert expires(london, "2021-06-30T23:30:00Z") == local(2021, 7, 12, LONDON)
    assert expires(london, "2021-06-30T23:30:00Z") == datetime(2021, 7, 11, 23, tzinfo=UTC)
    new_york = program({"based_on": "event_date", "unit": "days", "value": 10}, tz="America/New_York")
    # 02:00 UTC on 1 Jul is 22:00 EDT on 30 Jun: 30 Jun + 10 -> through 10 Jul (New York).
    assert expires(new_york, "2021-07-01T02:00:00Z") == datetime(2021, 7, 11, 4, tzinfo=UTC)


def test_expiry_across_dst_changes_stays_at_local_midnight() -> None:
    london = program({"based_on": "event_date", "unit": "days", "value": 10}, tz="Europe/London")
    # Earned in BST, expires in GMT: 20 Oct + 10 = 30 Oct, gone at 00:00 GMT on 31 Oct.
    assert expires(london, "2024-10-20T12:00:00+01:00") == datetime(2024, 10, 31, 0, tzinfo=UTC)
    new_york = program({"based_on": "event_date", "unit": "days", "value": 10}, tz="America/New_York")
    # Earned in EST, expires in EDT: 1 Mar + 10 = 11 Mar, gone at 00:00 EDT on 12 Mar (04:00 UTC).
    first = buy(None, new_york, "t1", "2024-03-01T12:00:00-05:00")
    assert first.state.lots[0].expires_at == datetime(2024, 3, 12, 4, tzinfo=UTC)
    before = buy(first.state, new_york, "t2", "2024-03-12T03:59:59Z")
    assert not [e for e in before.ledger if e.kind == LedgerKind.EXPIRE]
    after = buy(before.state, new_york, "t3", "2024-03-12T04:00:00Z")
    assert [(e.kind, e.occurred_at.isoformat()) for e in after.ledger][:1] == [
        (LedgerKind.EXPIRE, "2024-03-12T00:00:00-04:00")]


# Customer-based bases ---------------------------------------------------------------------------------
def moves(outcome: Outcome) -> list[tuple[str | None, Decimal, datetime | None, str | None, str]]:
    """The REDATE entries of an outcome: (lot, amount, new expiry, reason, cause)."""
    return [(e.lot_id, e.amount, e.expires_at, e.reason, e.source_event_id)
            for e in outcome.ledger if e.kind == LedgerKind.REDATE]


def test_membership_end_date_and_its_changes() -> None:
    prog = program({"based_on": "membership_end"})
    unknown = buy(None, prog, "t0", "2024-06-01T10:00:00Z")
    assert unknown.state.lots[0].expires_at is None  # no membership yet: follows it once known
    lot_id = unknown.state.lots[0].lot_id
    registered = apply(unknown.state, activity("Registration", "r1", "2024-06-02T10:00:00Z",
                                               membership_end="2025-01-31"), prog)
    assert registered.state.lots[0].expires_at == local(2025, 2, 1)
    assert moves(registered) == [(lot_id, Decimal(0), local(2025, 2, 1), "membership end changed", "r1")]
    assert expires(prog, "2024-07-01T10:00:00Z", registered.state) == local(2025, 2, 1)
    renewed = apply(registered.state, activity("CustomerUpdate", "u1", "2024-12-01T10:00:00Z",
                                               membership_end="2026-01-31"), prog)
    assert renewed.state.lots[0].expires_at == local(2026, 2, 1)
    assert moves(renewed) == [(lot_id, Decimal(0), local(2026, 2, 1), "membership end changed", "u1")]
    [entry] = renewed.ledger
    assert (entry.bucket, entry.balance_after, entry.occurred_at) == (
        Bucket.CURRENT, Decimal(100), datetime(2024, 12, 1, 10, tzinfo=UTC))
    change = renewed.balance_change  # the ledger moved (balances did not): the change carries its seq
    assert change is not None and (change.seq, change.delta_current) == (entry.seq, Decimal(0))
    same = apply(renewed.state, activity("CustomerUpdate", "u1b", "2024-12-02T10:00:00Z",
                                         membership_end="2026-01-31"), prog)
    assert same.ledger == [] and same.balance_change is None  # the date did not move: nothing written
    ended = apply(same.state, activity("CustomerUpdate", "u2", "2025-03-01T10:00:00Z",
                                       membership_end="2025-02-28"), prog)
    assert ended.state.lots[0].expires_at == datetime(2025, 3, 1, 10, tzinfo=UTC)  # ended: expires now
    assert moves(ended) == [(lot_id, Decimal(0), datetime(2025, 3, 1, 10, tzinfo=UTC), "membership end changed",
                             "u2")]
    gone = apply(ended.state, scheduler_event("p", "2025-03-01T10:00:00Z"), prog)
    assert [(e.kind, e.amount) for e in gone.ledger] == [(LedgerKind.EXPIRE, Decimal(-100))]


def test_membership_moves_are_the_same_on_a_replay_and_follow_the_lots_bucket() -> None:
    prog = program({"based_on": "membership_end"}, earn_conditions=[
        {"code": "E", "allocation": {"type": "fixed", "points": 100}, "expiry": "X", "delay_days": 30}])

    def run() -> list[Outcome]:
        first = buy(None, prog, "t0", "2024-06-01T10:00:00Z")
        member = apply(first.state, activity("Registration", "r1", "2024-06-02T10:00:00Z",
                                             membership_end="2025-01-31"), prog)
        return [first, member]

    first, member = run()
    [entry] = member.ledger
    assert (entry.kind, entry.bucket, entry.amount, entry.promised_after) == (
        LedgerKind.REDATE, Bucket.PROMISED, Decimal(0), Decimal(100))
    assert entry.available_at == first.state.lots[0].available_at  # the rest of the lot, as it is
    assert entry.entry_id == run()[1].ledger[0].entry_id


def test_membership_end_with_a_month_offset() -> None:
    prog = program({"based_on": "membership_end", "unit": "months", "value": 1})
    state = apply(None, activity("Registration", "r1", "2024-06-02T10:00:00Z", membership_end="2025-01-15"),
                  prog).state
    assert expires(prog, "2024-07-01T10:00:00Z", state) == local(2025, 3, 1)  # usable through 28 Feb


def test_registration_date_is_the_next_anniversary_after_the_event() -> None:
    prog = program({"based_on": "registration_date"}, tz="Europe/London")
    before = buy(None, prog, "t0", "2023-01-10T10:00:00Z")
    assert before.state.lots[0].expires_at is None  # not registered yet
    registered = apply(before.state, activity("Registration", "r1", "2023-03-15T10:00:00Z"), prog)
    assert registered.state.lots[0].expires_at == local(2024, 3, 16, LONDON)  # first anniversary
    assert moves(registered) == [(before.state.lots[0].lot_id, Decimal(0), local(2024, 3, 16, LONDON),
                                  "registration date set", "r1")]
    assert expires(prog, "2024-06-01T10:00:00Z", registered.state) == local(2025, 3, 16, LONDON)
    assert expires(prog, "2024-03-15T10:00:00Z", registered.state) == local(2025, 3, 16, LONDON)
    assert expires(prog, "2024-03-14T10:00:00Z", registered.state) == local(2024, 3, 16, LONDON)


def test_registration_on_29_february() -> None:
    prog = program({"based_on": "registration_date"})
    state = apply(None, activity("Registration", "r1", "2024-02-29T10:00:00Z"), prog).state
    assert expires(prog, "2024-03-01T10:00:00Z", state) == local(2025, 3, 1)  # through 28 Feb 2025
    assert expires(prog, "2027-03-01T10:00:00Z", state) == local(2028, 3, 1)  # through 29 Feb 2028


@pytest.mark.parametrize(("yearly", "when", "last_day"), [
    ({"month": 12, "day": 31}, "2024-07-10T10:00:00Z", date(2024, 12, 31)),
    ({"month": 12, "day": 31}, "2024-12-31T10:00:00Z", date(2025, 12, 31)),  # strictly after the event
    ({"month": 3, "day": 31}, "2024-04-01T10:00:00Z", date(2025, 3, 31)),
    ({"month": 2, "day": 29}, "2024-01-01T10:00:00Z", date(2024, 2, 29)),
    ({"month": 2, "day": 29}, "2024-03-01T10:00:00Z", date(2025, 2, 28)),
])
def test_fixed_yearly_date(yearly: dict[str, int], when: str, last_day: date) -> None:
    prog = program({"based_on": "fixed_yearly_date", "yearly": yearly})
    at = expires(prog, when)
    assert at is not None and expiry.expiry_date(at, prog.zone) == last_day


@pytest.mark.parametrize(("unit", "value", "field", "last_day"), [
    (None, None, "2024-12-31", date(2024, 12, 31)),
    ("days", 10, "2024-12-31", date(2025, 1, 10)),
    ("months", 1, "2024-12-31", date(2025, 1, 31)),
    ("months", 2, "2024-12-15", date(2025, 2, 28)),
    (None, None, "2024-12-31T23:30:00-05:00", date(2025, 1, 1)),  # a date-time is read in the program's zone
    (None, None, "2024-07-10", date(2024, 7, 10)),  # the event's own date is not in the past
    (None, None, "2024-01-01", date(2024, 7, 17)),  # past: 7 days after the event date
    ("days", 5, "2024-07-01", date(2024, 7, 17)),  # 6 Jul is still past
    (None, None, "not a date", date(2024, 7, 17)),  # unreadable: same fallback, the event never fails
])
def test_transaction_extended_field(unit: str | None, value: int | None, field: str, last_day: date) -> None:
    condition: dict[str, Any] = {"based_on": "transaction_extended_field", "field": "valid_until"}
    if unit is not None:
        condition.update(unit=unit, value=value)
    prog = program(condition)
    at = expires(prog, "2024-07-10T10:00:00Z", extended_fields={"valid_until": field})
    assert at is not None and expiry.expiry_date(at, prog.zone) == last_day


def test_transaction_extended_field_missing_falls_back_to_seven_days() -> None:
    prog = program({"based_on": "transaction_extended_field", "field": "valid_until"})
    assert expires(prog, "2024-07-10T10:00:00Z") == local(2024, 7, 18)


def test_customer_extended_field_and_its_update() -> None:
    prog = program({"based_on": "customer_extended_field", "field": "valid_until",
                    "unit": "days", "value": 1})
    state = apply(None, activity("Registration", "r1", "2024-01-01T10:00:00Z",
                                 extended_fields={"valid_until": "2025-06-29"}), prog).state
    first = buy(state, prog, "t1", "2024-07-10T10:00:00Z")
    assert first.state.lots[0].expires_at == local(2025, 7, 1)  # 29 Jun + 1 day -> through 30 Jun
    other = apply(first.state, activity("CustomerUpdate", "u0", "2024-08-01T10:00:00Z",
                                        custom_fields={"colour": "red"}), prog)
    assert other.state.lots[0].expires_at == local(2025, 7, 1)  # the field was not touched
    assert other.ledger == []
    moved = apply(other.state, activity("CustomerUpdate", "u1", "2024-08-02T10:00:00Z",
                                        extended_fields={"valid_until": "2025-12-30"}), prog)
    assert moved.state.lots[0].expires_at == local(2026, 1, 1)
    assert moves(moved) == [(first.state.lots[0].lot_id, Decimal(0), local(2026, 1, 1), "customer data changed",
                             "u1")]


@pytest.mark.parametrize(("fields", "last_day"), [
    ({"valid_until": "2024-01-01"}, date(2024, 7, 17)),  # past: 7 days after the event date
    ({"valid_until": "2024-07-05"}, date(2024, 7, 17)),  # + 1 day is 6 Jul, still past
    ({}, date(2024, 7, 17)),  # missing: same fallback, the event never fails
    ({"valid_until": "2024-07-10"}, date(2024, 7, 11)),  # the event's own date + 1 day is not past
])
def test_customer_extended_field_in_the_past_falls_back_to_seven_days(fields: dict[str, str],
                                                                        last_day: date) -> None:
    prog = program({"based_on": "customer_extended_field", "field": "valid_until", "unit": "days", "value": 1})
    state = apply(None, activity("Registration", "r1", "2024-01-01T10:00:00Z", extended_fields=fields),
                  prog).state
    at = expires(prog, "2024-07-10T10:00:00Z", state)
    assert at is not None and expiry.expiry_date(at, prog.zone) == last_day


# Validation -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("condition", "message"), [
    ({"unit": "days"}, "needs a value"),
    ({"unit": "days", "value": "1.5"}, "whole number"),
    ({"unit": "months", "value": {"bronze": -1}}, "whole number"),
    ({"unit": "never", "value": 3}, "only used with unit"),
    ({"unit": "date"}, "needs a date"),
    ({"based_on": "membership_end", "unit": "date", "date": "2024-01-01"}, "only valid for event dates"),
    ({"unit": "days", "value": 3, "date": "2024-01-01"}, "only used with unit 'date'"),
    ({"based_on": "fixed_yearly_date"}, "yearly is required"),
    ({"based_on": "fixed_yearly_date", "yearly": {"month": 4, "day": 31}}, "no day 31 in month 4"),
    ({"yearly": {"month": 1, "day": 1}}, "yearly is required"),
    ({"based_on": "customer_extended_field"}, "field is required"),
    ({"field": "x"}, "field is required"),
])
def test_inconsistent_conditions_are_load_errors(condition: dict[str, Any], message: str) -> None:
    with pytest.raises(ProgramError, match=message):
        program(condition)


def test_expiry_of_a_lot_is_the_same_lazily_and_by_scheduler_event() -> None:
    prog = program({"based_on": "event_date", "unit": "days", "value": 10}, tz="Europe/London")
    first = buy(None, prog, "t1", "2024-10-20T12:00:00+01:00")
    due = lifecycle.next_transition(first.state, prog)
    assert due == lifecycle.Due(datetime(2024, 10, 31, tzinfo=LONDON), "PointsExpiry")
    ticked = apply(first.state, scheduler_event("sched", due.at.isoformat()), prog)
    lazy = buy(first.state, prog, "t2", "2024-11-05T12:00:00Z")
    assert ticked.ledger == lazy.ledger[:1]
    assert ticked.ledger[0].bucket == Bucket.CURRENT and ticked.ledger[0].source is None
    assert lifecycle.next_due(ticked.state, prog) is None
