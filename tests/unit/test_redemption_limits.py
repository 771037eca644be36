"""Per-customer redemption limits: today, calendar week, calendar month (program time zone), last X days.

Each boundary test is built so that counting in UTC instead of the program's zone gives the other answer.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from loyalty_stream.engine import periods
from loyalty_stream.engine.state import new_state
from loyalty_stream.events.outputs import RedemptionStatus

from .test_redeem import Customer, add_lot, make_program, result_of

D = Decimal
ACCEPTED, REJECTED = RedemptionStatus.ACCEPTED, RedemptionStatus.REJECTED


def customer(timezone: str, **limits: Any) -> Customer:
    state = new_state("c1", "default")
    add_lot(state, "big", "100000")
    program = make_program(timezone=timezone, redeem_conditions=[{"code": "R", "limits": limits}])
    return Customer(program, state)


def answer(c: Customer, points: str, when: str) -> tuple[RedemptionStatus, str | None]:
    result = result_of(c.redeem(points, when))
    return result.status, result.reason_code


def test_daily_limit_resets_at_local_midnight_not_utc() -> None:
    c = customer("Asia/Kolkata", per_day=100)  # +05:30
    assert answer(c, "60", "2024-05-01T23:00:00+05:30") == (ACCEPTED, None)
    assert answer(c, "50", "2024-05-01T23:30:00+05:30") == (REJECTED, "daily_limit_reached")
    # 00:30 local on the 2nd is 19:00 UTC on the 1st: a UTC day would still hold the 60 above.
    assert answer(c, "100", "2024-05-01T19:00:00+00:00") == (ACCEPTED, None)
    assert c.outcomes[1].redemption_result is not None
    assert "60" in c.outcomes[1].redemption_result.message


def test_calendar_week_sunday_2330_local_vs_monday_0030_local() -> None:
    c = customer("America/New_York", per_calendar_week=100)  # -05:00 in January
    assert answer(c, "80", "2024-01-09T12:00:00-05:00") == (ACCEPTED, None)  # Tuesday
    # Sunday 23:30 local is Monday 04:30 UTC: in UTC it would open a new week.
    assert answer(c, "20", "2024-01-14T23:30:00-05:00") == (ACCEPTED, None)
    # Sunday 23:45 local, given in UTC
    assert answer(c, "10", "2024-01-15T04:45:00+00:00") == (REJECTED, "weekly_limit_reached")
    # Monday 00:30 local (05:30 UTC): a new local week, although UTC would count the Sunday 20 in it.
    assert answer(c, "100", "2024-01-15T00:30:00-05:00") == (ACCEPTED, None)
    assert answer(c, "1", "2024-01-21T23:59:00-05:00") == (REJECTED, "weekly_limit_reached")


def test_calendar_month_boundary_in_the_program_zone() -> None:
    c = customer("Asia/Tokyo", per_calendar_month=100)  # +09:00
    assert answer(c, "100", "2024-01-31T23:30:00+09:00") == (ACCEPTED, None)
    assert answer(c, "1", "2024-01-31T23:50:00+09:00") == (REJECTED, "monthly_limit_reached")
    # 1 Feb 00:30 local is still 31 Jan in UTC.
    assert answer(c, "100", "2024-01-31T15:30:00+00:00") == (ACCEPTED, None)


def test_past_days_is_a_rolling_window() -> None:
    c = customer("UTC", per_last_days={"days": 7, "points": 100})
    assert answer(c, "100", "2024-03-01T10:00:00+00:00") == (ACCEPTED, None)
    assert answer(c, "1", "2024-03-08T09:59:00+00:00") == (REJECTED, "past_days_limit_reached")
    assert answer(c, "100", "2024-03-08T10:00:00+00:00") == (ACCEPTED, None)  # exactly 7 x 24 h later


def test_limits_count_together_and_the_first_exceeded_answers() -> None:
    c = customer("UTC", per_day=50, per_calendar_week=70, per_calendar_month=1000)
    assert answer(c, "50", "2024-03-04T10:00:00+00:00") == (ACCEPTED, None)  # Monday
    assert answer(c, "30", "2024-03-05T10:00:00+00:00") == (REJECTED, "weekly_limit_reached")
    assert answer(c, "51", "2024-03-05T11:00:00+00:00") == (REJECTED, "daily_limit_reached")
    assert answer(c, "20", "2024-03-05T12:00:00+00:00") == (ACCEPTED, None)


def test_rejected_and_reversed_redemptions_do_not_count() -> None:
    c = customer("UTC", per_day=100)
    assert answer(c, "200", "2024-03-04T09:00:00+00:00") == (REJECTED, "daily_limit_reached")
    assert answer(c, "100", "2024-03-04T10:00:00+00:00") == (ACCEPTED, None)
    c.do("RedemptionReversal", "2024-03-04T11:00:00+00:00", redemption_id="e2")
    assert answer(c, "100", "2024-03-04T12:00:00+00:00") == (ACCEPTED, None)


def test_a_late_event_counts_only_what_happened_before_it() -> None:
    c = customer("UTC", per_day=100)
    assert answer(c, "100", "2024-03-04T18:00:00+00:00") == (ACCEPTED, None)
    assert answer(c, "100", "2024-03-04T08:00:00+00:00") == (ACCEPTED, None)  # arrives late, happened first


def test_expression_counters_match_the_settings() -> None:
    """The names the PointsRedemption expressions use (customer.points_redeemed_today, ...)."""
    c = customer("Europe/Paris")
    for points, when in [("10", "2024-02-26T00:10:00+01:00"),  # Monday of the week
                         ("20", "2024-02-28T12:00:00+01:00"),
                         ("40", "2024-02-29T23:30:00+01:00"),  # Thursday, last day of February
                         ("80", "2024-03-01T08:00:00+01:00")]:  # Friday, a new month
        c.redeem(points, when)
    state, zone = c.state, ZoneInfo("Europe/Paris")
    at = datetime.fromisoformat("2024-03-01T09:00:00+01:00")
    assert periods.points_redeemed_today(state, at, zone) == D("80")
    assert periods.points_redeemed_in_calendar_week(state, at, zone) == D("150")
    assert periods.points_redeemed_in_calendar_month(state, at, zone) == D("80")
    assert periods.points_redeemed_in_past_days(state, at, 2) == D("140")  # since 28 Feb 09:00
    assert periods.points_redeemed_in_past_days(state, at, 1) == D("120")
    feb = datetime.fromisoformat("2024-02-29T23:59:00+01:00")
    assert periods.points_redeemed_in_calendar_month(state, feb, zone) == D("70")
    assert periods.points_redeemed_in(state, feb, "lifetime", zone) == D("70")
    assert periods.period_key(feb, "calendar_week", zone) == "calendar_week:2024-02-26"


def test_a_limit_written_as_a_rule_expression() -> None:
    """The document's way: the PointsRedemption rule's condition uses the customer's redeemed counters."""
    state = new_state("c1", "default")
    add_lot(state, "big", "1000")
    rule_sets = {"PointsRedemption": [{"name": "limited", "rules": [{
        "name": "under the daily limit",
        "when": "customer.points_redeemed_today + redemption.points <= 100 and "
                "customer.points_redeemed_in_past_days(7) + redemption.points <= 150",
        "actions": [{"type": "redeem", "condition": "R"}]}]}]}
    c = Customer(make_program(timezone="Asia/Kolkata", rule_sets=rule_sets), state)
    assert answer(c, "80", "2024-05-01T23:00:00+05:30") == (ACCEPTED, None)
    assert answer(c, "30", "2024-05-01T23:30:00+05:30") == (REJECTED, "no_redeem_condition")
    assert answer(c, "71", "2024-05-02T00:30:00+05:30") == (REJECTED, "no_redeem_condition")  # 7-day cap
    assert answer(c, "70", "2024-05-02T00:31:00+05:30") == (ACCEPTED, None)  # a new local day
