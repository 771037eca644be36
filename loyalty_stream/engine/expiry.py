"""Expiry dates of new lots, rolling expiry, and lots that follow the customer's data.

Date semantics (used everywhere: engine, views, scheduler):

- Every rule computes a local calendar date D in the program's time zone ("expires on D"). The points are
  usable through D and gone at 00:00 local of D+1; `Lot.expires_at` stores that instant, so "due" is a plain
  `expires_at <= t` comparison and a DST change never moves the day.
- days: D = event date + N (1 Jul + 10 days -> 11 Jul). months: D = last day of the month N months later
  (10 Jul + 1 -> 31 Aug; 31 Jan + 1 -> 28/29 Feb). date: D = the configured date. never: no expiry.
- registration_date: the first anniversary of the registration (local) date strictly after the event date
  (registered 29 Feb -> 28 Feb in common years); a customer with no registration yet gets no expiry until a
  Registration re-dates the lot.
- fixed_yearly_date: the first occurrence of month/day strictly after the event date.
- membership_end: the membership end date; lots follow later changes of it.
- extended fields: the field's date (+ optional offset). A missing, unreadable or past date (D before the
  event date) falls back to "7 days after the event" (D = event date + 7). The document says 7 days after the
  *processing* date; the engine has no clock, and the event time is what makes replays reproduce the result.
- Any other computed expiry that is already past at the event (a fixed date that has gone, a membership that
  has ended) is clamped to the event time itself: the points are born expired and expire at their event time.

A lot's expiry moves only through `redate` (rolling expiry, customer data), which writes a REDATE ledger entry:
the ledger is the complete record of every lot's expiry, and what the read model groups points by.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final, cast
from zoneinfo import ZoneInfo

from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.state import ZERO, CustomerState, Lot
from loyalty_stream.engine.times import fixed
from loyalty_stream.events import activities as act
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.events.outputs import Bucket, LedgerKind
from loyalty_stream.program.expiry import CUSTOMER_BASES, EVENT_BASES, FIELD_BASES, ExpiryCondition
from loyalty_stream.program.model import Program

ROLLING_EVENTS: Final[tuple[type[Envelope], ...]] = (
    act.TransactionAdd, act.Registration, act.CustomerUpdate, act.Engagement,
)
"""Activities that can award points: each one that awards points (or any, with `roll_expiry_on_zero_points`)
re-dates every rolling lot. Redemptions, returns, adjustments and scheduler events never roll."""

_ROLL_KINDS: Final[dict[type, tuple[bool, bool]]] = {}
"""By activity class: (a rolling event, a Registration or CustomerUpdate), the isinstance tests `roll_expiry` makes
once per activity, which against pydantic models go through their metaclass's `__instancecheck__` (an ABC)."""

PAST_FIELD_FALLBACK_DAYS: Final = 7
ONE_MICROSECOND: Final = timedelta(microseconds=1)


# Calendar arithmetic -----------------------------------------------------------------------------------
def local_date(at: datetime, zone: ZoneInfo) -> date:
    return at.astimezone(zone).date()


@lru_cache(maxsize=16384)
def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """00:00 of `day` in `zone`, via UTC so that a midnight inside a DST gap is the real start of the day.
    (A pure function of a day and a zone, computed once per pair: expiry dates, due times and period starts
    are mostly the same few local midnights; with the offset's shared zone, see `engine.times`.)"""
    return fixed(datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC).astimezone(zone))


@lru_cache(maxsize=16384)
def end_of(day: date, zone: ZoneInfo) -> datetime:
    """The instant points that "expire on `day`" are gone: 00:00 local of the next day."""
    return local_midnight(day + timedelta(days=1), zone)


def expiry_date(expires_at: datetime, zone: ZoneInfo) -> date:
    """The last local day the points are usable (the inverse of `end_of`)."""
    return local_date(expires_at - ONE_MICROSECOND, zone)


def last_day_of_month_after(day: date, months: int) -> date:
    """Month units expire on the last day of the month `months` after `day`'s month."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, calendar.monthrange(year, month + 1)[1])


def on_or_clamped(year: int, month: int, day: int) -> date:
    """month/day in `year`; 29 Feb in a common year is 28 Feb."""
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def yearly_after(month: int, day: int, after: date) -> date:
    """The first occurrence of month/day strictly after `after`."""
    candidate = on_or_clamped(after.year, month, day)
    return candidate if candidate > after else on_or_clamped(after.year + 1, month, day)


def anniversary_after(registered: date, after: date) -> date:
    """The first anniversary (1 year or more after registering) strictly after `after`."""
    year = max(registered.year + 1, after.year)
    candidate = on_or_clamped(year, registered.month, registered.day)
    return candidate if candidate > after else on_or_clamped(year + 1, registered.month, registered.day)


def reminder_due(expires_at: datetime, days_before: int, zone: ZoneInfo) -> datetime:
    """A reminder N days before expiry: 00:00 local N calendar days before the expiry instant's day."""
    return local_midnight(local_date(expires_at, zone) - timedelta(days=days_before), zone)


def field_date(value: Any, zone: ZoneInfo) -> date | None:
    """An extended field as a local date: ISO date, or ISO date-time (converted to the program's zone)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.date() if parsed.tzinfo is None else local_date(parsed, zone)


# Computing an expiry ------------------------------------------------------------------------------------
def _shift(day: date, condition: ExpiryCondition, tier: str | None) -> date | None:
    """Apply the condition's days/months offset; None when the tier has no value (never expires)."""
    if condition.unit not in ("days", "months"):
        return day
    amount = condition.amount_for(tier)
    if amount is None:
        return None
    if condition.unit == "days":
        return day + timedelta(days=amount)
    return last_day_of_month_after(day, amount)


def compute_expiry(
    condition: ExpiryCondition,
    *,
    earned: datetime,
    now: datetime,
    tier: str | None,
    zone: ZoneInfo,
    state: CustomerState,
    transaction_fields: dict[str, Any] | None = None,
    earned_day: date | None = None,
) -> datetime | None:
    """The `expires_at` instant for points earned at `earned`, evaluated at `now` (None: never expires).

    `now` is only used to decide what is "in the past" (see the module docstring); it equals `earned` except
    when a lot is re-dated later.
    """
    if condition.unit == "never":
        return None
    if earned_day is None:
        earned_day = local_date(earned, zone)
    basis = condition.based_on
    if basis in EVENT_BASES:
        if condition.unit is None:
            return None
        day = condition.date if condition.unit == "date" else _shift(earned_day, condition, tier)
        return None if day is None else max(end_of(day, zone), now)
    base: date | None
    if basis == "membership_end":
        base = state.membership_end
    elif basis == "registration_date":
        registered = state.registered_at
        base = None if registered is None else anniversary_after(local_date(registered, zone), earned_day)
    elif basis == "fixed_yearly_date":
        assert condition.yearly is not None
        base = yearly_after(condition.yearly.month, condition.yearly.day, earned_day)
    else:
        fields = transaction_fields if basis == "transaction_extended_field" else state.extended_fields
        base = field_date((fields or {}).get(condition.field or ""), zone)
    fallback = end_of(local_date(now, zone) + timedelta(days=PAST_FIELD_FALLBACK_DAYS), zone)
    if base is None:
        return fallback if basis in FIELD_BASES else None
    day = _shift(base, condition, tier)
    if day is None:
        return None
    at = end_of(day, zone)
    if at <= now:
        return fallback if basis in FIELD_BASES else now
    return at


def _tier(fx: Effects) -> str:
    return fx.state.tier or fx.known.lowest_tier  # (the program's is a property reading its tiers)


def condition_of(program: Program, code: str | None) -> ExpiryCondition | None:
    """The lot's expiry condition, or None when it has none or the program no longer defines it."""
    if code is None:
        return None
    try:
        return program.expiry_condition(code)
    except KeyError:
        return None


_EVENT_ENDS_LIMIT: Final = 4096


def _event_ends(fx: Effects) -> dict[tuple[str | None, str, date], tuple[datetime | None, bool]]:
    """Per program (`Facts.event_ends`): (code, tier, local event date) -> (expiry before clamping to the event
    time, rolling), for the event-date conditions only. Bounded: cleared when full (one entry per code, tier and
    day in use)."""
    ends = fx.known.event_ends
    if len(ends) >= _EVENT_ENDS_LIMIT:
        ends.clear()
    return ends


def assign_expiry(fx: Effects, code: str | None, transaction_fields: dict[str, Any] | None = None
                  ) -> tuple[datetime | None, str | None, bool]:
    """(expires_at, expiry code, rolling) for points credited now under expiry condition `code`
    (the program's default when None). Never-expiring points give (None, code, False).

    Delayed (promised) points count from the event date too, not from their conversion: the condition is
    about the activity, and the ledger entry of the promise already carries the expiry.
    """
    code = code or fx.known.default_expiry
    tier = _tier(fx)
    memo: dict[Any, Any] | None = None
    ends = None
    if transaction_fields is None:
        # The answer depends on the activity (time, bill fields), the code and the tier only: the customer
        # data an expiry reads is set before any rule runs. Several allocations of one activity share it.
        memo = fx.memo_for()
        known: tuple[datetime | None, str | None, bool] | None = memo.get(("expiry", code, tier))
        if known is not None:
            return known
        # An event-date expiry is `max(end, event time)` where `end` (None: never) depends only on the code,
        # the tier and the local event date (`compute_expiry`): kept per program, so activities of one day
        # share it.
        ends = _event_ends(fx)
        hit = ends.get((code, tier, fx.local_date()))
        if hit is not None:
            end, rolling = hit
            result = (None if end is None else max(end, fx.time), code, rolling)
            memo[("expiry", code, tier)] = result
            return result
    condition = condition_of(fx.program, code)
    if condition is None:
        return None, code, False
    if memo is not None and isinstance(fx.activity, act.TransactionAdd):
        transaction_fields = dict(fx.activity.payload.extended_fields)
    expires_at = compute_expiry(
        condition, earned=fx.time, now=fx.time, tier=tier, zone=fx.program.zone, state=fx.state,
        transaction_fields=transaction_fields, earned_day=fx.local_date(),
    )
    rolling = condition.based_on == "rolling_event_date"
    result = (expires_at, code, rolling)
    if memo is not None:
        memo[("expiry", code, tier)] = result
        if ends is not None and condition.based_on in EVENT_BASES and (expires_at is None or expires_at > fx.time):
            ends[(code, tier, fx.local_date())] = (expires_at, rolling)  # not clamped: it is `end` itself
    return result


# Re-dating lots -----------------------------------------------------------------------------------------
FOLLOW_REASONS: Final = {
    "membership_end": "membership end changed",
    "registration_date": "registration date set",
    "customer_extended_field": "customer data changed",
}
"""The `reason` of a REDATE entry written because the customer's data moved the lot (`_follow_customer`)."""


def redate(fx: Effects, lot: Lot, expires_at: datetime | None, reason: str) -> None:
    """Move a lot's expiry (None: it no longer expires) and write the REDATE entry that says so, so the ledger
    alone replays every expiry and the read model regroups the lot's points at once. Nothing happens when the
    date does not change. Reminders restart for the new date, except offsets already behind us.

    The entry moves no points (amount 0, the lot's bucket) and carries the lot's new `expires_at`. It is caused
    by the activity (never scheduled), and keyed by the lot and the new instant (in UTC like `lifecycle.stamp`,
    which imports this module; "never" for no expiry): unique, as one activity moves a lot to a date at most once,
    and a replay gives the same id.
    """
    if expires_at == lot.expires_at:
        return
    lot.expires_at = expires_at
    if expires_at is None:
        lot.reminded = ()
    else:
        zone = fx.program.zone
        lot.reminded = tuple(
            n for n in fx.program.reminders.days_before if reminder_due(expires_at, n, zone) <= fx.time
        )
    fx.entry(kind=LedgerKind.REDATE, bucket=Bucket.PROMISED if lot.promised else Bucket.CURRENT, amount=ZERO,
             key=(lot.lot_id, "never" if expires_at is None else expires_at.astimezone(UTC).isoformat()),
             lot=lot, reason=reason)


def roll_expiry(fx: Effects, awarded: Decimal) -> None:
    """Called once after every handler. After a rolling event that awarded points (or any rolling event with
    the program's "roll even when 0 points are given" toggle), every live rolling lot gets the expiry its own
    condition gives for this event (never shortened). After a Registration or CustomerUpdate that sets the
    data a customer-based expiry reads, those lots follow the new data. Every move is a REDATE entry."""
    activity = fx.activity
    kinds = _ROLL_KINDS.get(type(activity))
    if kinds is None:
        kinds = _ROLL_KINDS[type(activity)] = (isinstance(activity, ROLLING_EVENTS),
                                               isinstance(activity, act.Registration | act.CustomerUpdate))
    rolling, follows_customer = kinds
    if not rolling:
        return
    program, state = fx.program, fx.state
    if fx.any_rolling and (awarded > ZERO or program.roll_expiry_on_zero_points):
        for lot in state.lots:
            condition = condition_of(program, lot.expiry_code) if lot.rolling else None
            if condition is None or lot.remaining <= ZERO or lot.expires_at is None:
                continue
            new = compute_expiry(condition, earned=fx.time, now=fx.time, tier=_tier(fx), zone=program.zone,
                                 state=state, earned_day=fx.local_date())
            if new is None or new > lot.expires_at:
                redate(fx, lot, new, "rolling expiry")
    if follows_customer:
        _follow_customer(fx, cast(act.Registration | act.CustomerUpdate, activity))


def _touches(condition: ExpiryCondition, activity: act.Registration | act.CustomerUpdate) -> bool:
    """Did this activity set the customer datum the condition reads?"""
    if condition.based_on == "membership_end":
        return activity.payload.membership_end is not None
    if condition.based_on == "registration_date":
        return isinstance(activity, act.Registration)
    fields = activity.payload.extended_fields
    return condition.based_on == "customer_extended_field" and condition.field in fields


def _follow_customer(fx: Effects, activity: act.Registration | act.CustomerUpdate) -> None:
    """Re-date live lots whose expiry reads customer data this activity set (a renewed membership extends
    them, an ended one expires them now). The lot keeps its own earn date as the event date."""
    program = fx.program
    for lot in fx.state.lots:
        condition = condition_of(program, lot.expiry_code)
        if condition is None or condition.based_on not in CUSTOMER_BASES or lot.remaining <= ZERO:
            continue
        if not _touches(condition, activity):
            continue
        new = compute_expiry(condition, earned=lot.earned_at, now=lot.earned_at, tier=_tier(fx),
                             zone=program.zone, state=fx.state)
        if new is not None:
            new = max(new, fx.time)
        redate(fx, lot, new, FOLLOW_REASONS[condition.based_on])
