"""Redemption: debit current points from lots, soonest expiry first, and answer the request."""

from __future__ import annotations

from datetime import datetime

from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.ids import derive_id
from loyalty_stream.engine.state import ZERO, Consumption, Lot, Redemption
from loyalty_stream.events import activities as act
from loyalty_stream.events.outputs import Bucket, ConsumedLot, LedgerKind, RedemptionResult, RedemptionStatus

_FAR = datetime.max.replace(tzinfo=None)


def spending_order(lot: Lot) -> tuple[int, datetime, datetime, str]:
    """Current lots, soonest expiry first (never-expiring last), then oldest, then id for determinism."""
    expires = lot.expires_at
    return (expires is None, expires.replace(tzinfo=None) if expires else _FAR,
            lot.earned_at.replace(tzinfo=None), lot.lot_id)


def handle_redemption(fx: Effects, activity: act.PointsRedemption) -> None:
    payload = activity.payload
    points = fx.round(payload.points)
    redemption_id = payload.redemption_id or activity.event_id
    state = fx.state
    if points <= ZERO or points > state.current:
        _answer(fx, activity, redemption_id, RedemptionStatus.REJECTED, ZERO, [],
                "insufficient_balance", f"balance {state.current} is less than {points}")
        return
    consumed: list[Consumption] = []
    left = points
    for lot in sorted((lot for lot in state.lots if lot.spendable), key=spending_order):
        take = min(lot.remaining, left)
        lot.remaining -= take
        consumed.append(Consumption(lot.lot_id, take))
        left -= take
        if left == ZERO:
            break
    state.redeemed += points
    state.redemptions[redemption_id] = Redemption(
        redemption_id=redemption_id, event_id=activity.event_id, at=activity.event_time, points=points,
        bill_number=payload.bill_number, consumed=consumed,
    )
    fx.entry(kind=LedgerKind.REDEEM, bucket=Bucket.CURRENT, amount=-points, key=(redemption_id,),
             redemption_id=redemption_id, bill_number=payload.bill_number)
    _answer(fx, activity, redemption_id, RedemptionStatus.ACCEPTED, points, consumed, None,
            f"redeemed {points} points")


def _answer(fx: Effects, activity: act.PointsRedemption, redemption_id: str, status: RedemptionStatus,
            debited: object, consumed: list[Consumption], reason: str | None, message: str) -> None:
    lots = {lot.lot_id: lot for lot in fx.state.lots}
    fx.outcome.redemption_result = RedemptionResult.model_construct(
        type="RedemptionResult",
        result_id=derive_id("rr", activity.event_id),
        request_event_id=activity.event_id,
        customer_id=fx.state.customer_id,
        program_id=fx.state.program_id,
        status=status,
        reason_code=reason,
        message=message,
        points_requested=activity.payload.points,
        points_debited=debited,
        currency_value=fx.round(debited * fx.program.point_value) if isinstance(debited, type(ZERO)) else ZERO,
        redemption_id=redemption_id,
        bill_number=activity.payload.bill_number,
        lots=[ConsumedLot.model_construct(lot_id=c.lot_id, points=c.points, expires_at=lots[c.lot_id].expires_at)
              for c in consumed],
        balance_after=fx.state.current,
        occurred_at=activity.event_time,
    )


def handle_reversal(fx: Effects, activity: act.RedemptionReversal) -> None:
    fx.outcome.rejected = "redemption reversal is not supported yet"
