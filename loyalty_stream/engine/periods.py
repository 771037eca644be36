"""Calendar periods in the program's time zone: caps, redemption limits and expressions count in event time.

The redemption counters here serve both the plain per-customer limits of a redeem condition
(`RedeemCondition.limits`) and the expression names of the PointsRedemption rules
(`customer.points_redeemed_today`, `..._in_calendar_week`, `..._in_calendar_month`,
`..._in_past_days(n)`), so a limit written either way counts exactly the same points.
They are derived from the customer's redemptions (never a separate counter), so a reversal or a return that
gives a redemption back frees its share of the limit with nothing else to keep in step.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from loyalty_stream.engine.state import ZERO, CustomerState

Period = Literal["day", "calendar_week", "calendar_month", "calendar_year", "lifetime"]


def _opening_date(local: date, period: Period) -> date | None:
    """The local date that opens the period containing local date `local` (weeks start on Monday)."""
    if period == "lifetime":
        return None
    if period == "day":
        return local
    if period == "calendar_week":
        return local - timedelta(days=local.weekday())
    if period == "calendar_month":
        return local.replace(day=1)
    return local.replace(month=1, day=1)


def period_start(at: datetime, period: Period, zone: ZoneInfo) -> datetime | None:
    """Local midnight that opens the period containing `at` (weeks start on Monday); None for lifetime."""
    start = _opening_date(at.astimezone(zone).date(), period)
    return None if start is None else datetime.combine(start, time(0), tzinfo=zone)


def period_key(at: datetime, period: Period, zone: ZoneInfo) -> str:
    """A stable label of the period containing `at`, for counters keyed by period."""
    start = period_start(at, period, zone)
    return "lifetime" if start is None else f"{period}:{start.date().isoformat()}"


@lru_cache(maxsize=1024)
def period_label(local: date, period: Period) -> str:
    """`period_key` of an instant whose local date (in the zone) is `local`: the label names the local date
    that opens the period, which only that date decides. Remembered: capped sets label a period or two per
    activity, the activities of a period share their labels, and building one costs a few thousand
    instructions (`date.replace` takes keywords, `isoformat` formats)."""
    start = _opening_date(local, period)
    return "lifetime" if start is None else f"{period}:{start.isoformat()}"


def points_redeemed(state: CustomerState, since: datetime | None, until: datetime, *,
                    since_inclusive: bool = True) -> Decimal:
    """Points redeemed (and not reversed) from `since` up to and including `until`, by redemption event time.

    Redemptions later than `until` are ignored, so a late event is judged by what had happened before it.
    """
    total = ZERO
    for redemption in state.redemptions.values():
        at = redemption.at
        if redemption.reversed or at > until:
            continue
        if since is not None and (at < since or (not since_inclusive and at == since)):
            continue
        total += redemption.points
    return total


def points_redeemed_in(state: CustomerState, at: datetime, period: Period, zone: ZoneInfo) -> Decimal:
    """Points redeemed in the calendar period (program zone) that contains `at`, up to `at`."""
    return points_redeemed(state, period_start(at, period, zone), at)


def points_redeemed_past_days(state: CustomerState, at: datetime, days: int) -> Decimal:
    """The last `days` days up to `at`: a rolling window of days x 24 h (a redemption exactly `days` days
    before `at` has left it), not calendar days, so it does not depend on the time zone."""
    return points_redeemed(state, at - timedelta(days=days), at, since_inclusive=False)


# Expression names (customer.points_redeemed_today, ...) -------------------------------------------------

def points_redeemed_today(state: CustomerState, at: datetime, zone: ZoneInfo) -> Decimal:
    """currentCustomer.pointsRedeemedToday: since local midnight of `at` in the program zone."""
    return points_redeemed_in(state, at, "day", zone)


def points_redeemed_in_calendar_week(state: CustomerState, at: datetime, zone: ZoneInfo) -> Decimal:
    """currentCustomer.pointsRedeemedInCalendarWeek: since Monday 00:00 local."""
    return points_redeemed_in(state, at, "calendar_week", zone)


def points_redeemed_in_calendar_month(state: CustomerState, at: datetime, zone: ZoneInfo) -> Decimal:
    """currentCustomer.pointsRedeemedInCalendarMonth: since the 1st, 00:00 local."""
    return points_redeemed_in(state, at, "calendar_month", zone)


def points_redeemed_in_past_days(state: CustomerState, at: datetime, days: int) -> Decimal:
    """currentCustomer.pointsRedeemedInPastDays(days): see `points_redeemed_past_days`."""
    return points_redeemed_past_days(state, at, days)
