"""Points lifecycle: promised -> current after the delay, expiry, unlock; materialised by event time."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.state import ZERO, Lot
from loyalty_stream.events import activities as act
from loyalty_stream.events.outputs import Bucket, LedgerKind


def available_after(event_time: datetime, delay_days: int, zone: ZoneInfo) -> datetime:
    """Delayed points become current the morning after event date + N days, in the program's zone."""
    local_date = event_time.astimezone(zone).date() + timedelta(days=delay_days + 1)
    return datetime.combine(local_date, time(0), tzinfo=zone)


def convert(fx: Effects, lot: Lot, at: datetime, *, scheduled: bool, reason: str | None = None) -> None:
    """Promised -> current: two entries (promised down, current up) so both balances reconcile."""
    lot.promised = False
    amount = lot.remaining
    lot.available_at = at if not scheduled else lot.available_at
    fx.settle_debt(lot)
    fx.entry(kind=LedgerKind.CONVERT, bucket=Bucket.CURRENT, amount=amount, key=(lot.lot_id,), at=at,
             scheduled=scheduled, lot=lot, reason=reason, source_type="DelayedAccrual" if scheduled else None)


def expire(fx: Effects, lot: Lot, at: datetime) -> None:
    amount = lot.remaining
    lot.remaining = ZERO
    fx.state.expired += amount
    fx.entry(kind=LedgerKind.EXPIRE, bucket=Bucket.CURRENT, amount=-amount, key=(lot.lot_id,), at=at,
             scheduled=True, lot=lot, source_type="PointsExpiry")


def materialise(fx: Effects, until: datetime) -> None:
    """Apply every conversion and expiry due at or before `until`, in due-time order."""
    due: list[tuple[datetime, int, str, Lot]] = []
    for lot in fx.state.lots:
        if lot.promised and lot.available_at is not None and lot.available_at <= until and lot.remaining > ZERO:
            due.append((lot.available_at, 0, lot.lot_id, lot))
        elif not lot.promised and lot.expires_at is not None and lot.expires_at <= until and lot.remaining > ZERO:
            due.append((lot.expires_at, 1, lot.lot_id, lot))
    for at, kind, _, lot in sorted(due, key=lambda d: d[:3]):
        if kind == 0:
            convert(fx, lot, at, scheduled=True)
            if lot.expires_at is not None and lot.expires_at <= until:
                expire(fx, lot, lot.expires_at)
        else:
            expire(fx, lot, at)


def handle_due(fx: Effects, activity: act.DelayedAccrual | act.PointsExpiry) -> None:
    """Scheduler events carry no work of their own: materialisation up to their time did it."""


def handle_unlock(fx: Effects, activity: act.PointsUnlock) -> None:
    wanted = set(activity.payload.item_ids)
    for lot in fx.state.lots:
        if lot.promised and lot.bill_number == activity.payload.bill_number and lot.remaining > ZERO and (
            not wanted or lot.line_item_id in wanted
        ):
            convert(fx, lot, fx.at, scheduled=False, reason="unlocked")
