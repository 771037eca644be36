"""Customer views: balance summary, upcoming expiration groups (by local day), promised points."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from loyalty_stream.engine import views
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.state import CustomerState
from loyalty_stream.program.model import Program

from .conftest import activity, program_from

UTC = ZoneInfo("UTC")
LONDON = ZoneInfo("Europe/London")


def program(*codes: str) -> Program:
    """Per purchase: NOW 100 (expire after 10 days), LATER 50 promised for 2 days (expire after 1 month),
    KEEP 5 (never expire). One activity cannot mix direct and delayed allocation, so purchases go through
    a direct program or a delayed one (the same program id)."""
    conditions: dict[str, dict[str, Any]] = {
        "NOW": {"allocation": {"type": "fixed", "points": 100}, "expiry": "D10"},
        "LATER": {"allocation": {"type": "fixed", "points": 50}, "delay_days": 2, "expiry": "M1"},
        "KEEP": {"allocation": {"type": "fixed", "points": 5}},
    }
    allocations: list[dict[str, Any]] = [{"type": "allocate", "condition": code} for code in codes]
    return program_from({
        "timezone": "Europe/London",
        "rounding": {"decimals": 0},
        "earn_conditions": [{"code": code, **conditions[code]} for code in codes],
        "expiry_conditions": [{"code": "D10", "unit": "days", "value": 10},
                              {"code": "M1", "unit": "months", "value": 1}],
        "rule_sets": {"TransactionAdd": [{"name": "earn", "rules": [
            {"name": "all", "when": "true", "actions": allocations}]}]},
    })


DIRECT = program("NOW", "KEEP")
DELAYED = program("LATER")


def history() -> tuple[Program, CustomerState]:
    state = None
    for event_id, when in (("t1", "2024-10-20T12:00:00+01:00"), ("t2", "2024-10-21T09:00:00+01:00"),
                           ("t3", "2024-10-25T18:00:00+01:00")):
        for prog, suffix in ((DIRECT, ""), (DELAYED, "-d")):
            name = event_id + suffix
            purchase = activity("TransactionAdd", name, when, bill_number=f"B-{name}", amount="10")
            state = apply(state, purchase, prog).state
    assert state is not None
    state = apply(state, activity("PointsRedemption", "r1", "2024-10-25T19:00:00+01:00", points="120"),
                  DIRECT).state
    return DIRECT, state


def test_balances_summary() -> None:
    _, state = history()
    # Current: 3 x 100 + 2 x 50 converted (t1, t2) + 3 x 5 - 120 redeemed; t3's 50 still promised.
    assert views.balances(state) == views.Balances(
        current=Decimal(295), promised=Decimal(50), lifetime_earned=Decimal(465), redeemed=Decimal(120),
        expired=Decimal(0), returned=Decimal(0), debt=Decimal(0),
    )


def test_balances_as_of_a_later_time_project_conversions_and_expiries() -> None:
    _, state = history()
    # On 31 Oct t3's 50 is current; t1's NOW lot (through 30 Oct) was spent entirely by the redemption.
    at = datetime(2024, 10, 31, 12, tzinfo=UTC)
    summary = views.balances(state, at)
    assert (summary.current, summary.promised, summary.expired) == (Decimal(345), Decimal(0), Decimal(0))
    # On 1 Nov t2's NOW lot (through 31 Oct) is gone too: the 80 the redemption left of it.
    later = views.balances(state, datetime(2024, 11, 1, 12, tzinfo=UTC))
    assert (later.current, later.promised, later.expired) == (Decimal(265), Decimal(0), Decimal(80))


def test_upcoming_expirations_are_grouped_by_local_expiry_day() -> None:
    prog, state = history()
    at = datetime(2024, 10, 26, 12, tzinfo=UTC)
    assert views.upcoming_expirations(state, prog, at) == [
        # t2's 100 (t1's was redeemed first, 20 of t2's with it): 21 Oct + 10 = 31 Oct.
        (date(2024, 10, 31), Decimal(80)),
        (date(2024, 11, 4), Decimal(100)),  # t3: 25 Oct + 10
        (date(2024, 11, 30), Decimal(150)),  # every 50 of October: end of November (t3's still promised)
    ]
    assert views.upcoming_expirations(state, prog, datetime(2024, 11, 1, 0, tzinfo=UTC)) == [
        (date(2024, 11, 4), Decimal(100)), (date(2024, 11, 30), Decimal(150))]
    assert views.upcoming_expirations(state, prog, datetime(2024, 12, 1, tzinfo=UTC)) == []


def test_the_expiry_day_is_the_last_local_day_the_points_are_usable() -> None:
    prog, state = history()
    lot = next(lot for lot in state.lots if lot.source_event_id == "t2" and lot.condition_code == "NOW")
    assert lot.expires_at == datetime(2024, 11, 1, 0, tzinfo=LONDON)  # GMT by then
    assert views.upcoming_expirations(state, prog, datetime(2024, 10, 31, 23, 59, tzinfo=UTC))[0] == (
        date(2024, 10, 31), Decimal(80))


def test_promised_points_by_availability_and_bill() -> None:
    _, state = history()
    assert views.promised_points(state) == [(datetime(2024, 10, 28, tzinfo=LONDON), Decimal(50), "B-t3-d")]
    assert views.promised_points(state, datetime(2024, 10, 28, 0, tzinfo=UTC)) == []
    prog = DELAYED
    fresh = None
    for event_id, when in (("a", "2024-10-20T12:00:00+01:00"), ("b", "2024-10-20T13:00:00+01:00"),
                           ("c", "2024-10-19T12:00:00+01:00")):
        fresh = apply(fresh, activity("TransactionAdd", event_id, when, bill_number=f"B-{event_id}",
                                      amount="10"), prog).state
    assert fresh is not None
    assert views.promised_points(fresh) == [
        (datetime(2024, 10, 22, tzinfo=LONDON), Decimal(50), "B-c"),
        (datetime(2024, 10, 23, tzinfo=LONDON), Decimal(50), "B-a"),
        (datetime(2024, 10, 23, tzinfo=LONDON), Decimal(50), "B-b"),
    ]
