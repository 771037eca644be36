"""Manual adjustments by an operator: add or deduct points with a reason, visible in history like the rest.

An addition is a new lot (origin "adjust", expiry per `program.default_expiry`) and counts as earned points
(lifetime points, tiers), like any other credit. A deduction takes current points in spending order (one
ADJUST entry per lot, as for redemptions) and never takes the balance below zero: beyond the balance it is
clamped to what is there when the request says `clamp`, otherwise refused as a whole. A refused adjustment
is invalid input for the state it met and goes to the dead-letter topic with the balance in its reason,
where operations see it; a clamped one is applied and says so in the entry's reason. Deductions are not
redemptions: they count toward no redemption limit and cannot be reversed (add the points back instead).
"""

from __future__ import annotations

from loyalty_stream.engine import expiry
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.redeem import plan_spending
from loyalty_stream.engine.rounding import normalize
from loyalty_stream.engine.state import ZERO
from loyalty_stream.events import activities as act
from loyalty_stream.events.outputs import Bucket, LedgerKind


def handle_adjustment(fx: Effects, activity: act.ManualAdjustment) -> None:
    payload = activity.payload
    points = fx.round(payload.points)
    if points <= ZERO:
        fx.outcome.rejected = (f"{normalize(payload.points)} points round to {normalize(points)}: "
                               "nothing to adjust")
        return
    if payload.direction == "add":
        expires_at, code, rolling = expiry.assign_expiry(fx, None)
        fx.credit(points=points, key=("adjust",), expires_at=expires_at, expiry_code=code, rolling=rolling,
                  origin="adjust", kind=LedgerKind.ADJUST, reason=payload.reason,
                  operator_id=payload.operator_id)
        return
    balance = fx.current
    available = max(ZERO, balance)
    if points > available and not payload.clamp:
        fx.outcome.rejected = (f"deducting {normalize(points)} points would take the balance "
                               f"{normalize(balance)} below zero (send clamp=true to deduct what is there)")
        return
    amount = min(points, available)
    reason = payload.reason
    if amount < points:
        reason = f"{reason} (clamped: {normalize(points)} requested, {normalize(amount)} available)"
    if amount == ZERO:  # clamped to nothing: still on the ledger, so the operator sees what happened
        fx.entry(kind=LedgerKind.ADJUST, bucket=Bucket.CURRENT, amount=ZERO, key=("adjust",),
                 desired_amount=-points, reason=reason, operator_id=payload.operator_id)
        return
    for lot, take in plan_spending(fx.state, amount):
        fx.take(lot, take)
        fx.entry(kind=LedgerKind.ADJUST, bucket=Bucket.CURRENT, amount=-take, key=("adjust", lot.lot_id),
                 lot=lot, condition_code=None, line_item_id=None, bill_number=None, reason=reason,
                 operator_id=payload.operator_id)
