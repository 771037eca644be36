"""Calendar periods in the program's time zone: caps, redemption limits and expressions count in event time."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from loyalty_stream.engine.state import ZERO, CustomerState

Period = Literal["day", "calendar_week", "calendar_month", "calendar_year", "lifetime"]


def period_start(at: datetime, period: Period, zone: ZoneInfo) -> datetime | None:
    """Local midnight that opens the period containing `at` (weeks start on Monday); None for lifetime."""
    local = at.astimezone(zone).date()
    if period == "lifetime":
        return None
    if period == "day":
        start = local
    elif period == "calendar_week":
        start = local - timedelta(days=local.weekday())
    elif period == "calendar_month":
        start = local.replace(day=1)
    else:
        start = local.replace(month=1, day=1)
    return datetime.combine(start, time(0), tzinfo=zone)


def period_key(at: datetime, period: Period, zone: ZoneInfo) -> str:
    """A stable label of the period containing `at`, for counters keyed by period."""
    start = period_start(at, period, zone)
    return "lifetime" if start is None else f"{period}:{start.date().isoformat()}"


def points_redeemed(state: CustomerState, since: datetime | None, until: datetime) -> Decimal:
    """Points redeemed (and not reversed) with since <= redemption time <= until."""
    return sum(
        (r.points for r in state.redemptions.values()
         if not r.reversed and r.at <= until and (since is None or r.at >= since)),
        ZERO,
    )


def points_redeemed_in(state: CustomerState, at: datetime, period: Period, zone: ZoneInfo) -> Decimal:
    return points_redeemed(state, period_start(at, period, zone), at)


def points_redeemed_past_days(state: CustomerState, at: datetime, days: int) -> Decimal:
    """The last `days` days up to `at` (a rolling window, not calendar days)."""
    return points_redeemed(state, at - timedelta(days=days), at)
