"""The pure core: (customer state, activity, program) -> outcome (new state, ledger, notifications, ...).

No I/O, no wall clock, no globals: time is the activity's event time. Before an activity is applied, every
transition due by its event time (conversion of promised points, expiry, reminders) is materialised, so an
idle customer's scheduled events and the next activity's lazy catch-up produce the same ledger entries.

A return, unlock or reversal whose purchase or redemption has not arrived yet waits in the state and runs right
after it (`engine.parking`): Kafka orders a customer's records only within one topic.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

from loyalty_stream.engine import adjust, earn, expiry, lifecycle, parking, redeem, retention, returns, tiers
from loyalty_stream.engine.effects import Effects, Outcome
from loyalty_stream.engine.state import CustomerState, copy_state, new_state
from loyalty_stream.events import activities as act
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.events.outputs import SourceRef
from loyalty_stream.program.model import Program

Handler = Callable[[Effects, Any], None]

HANDLERS: Final[dict[type[Envelope], Handler]] = {
    act.TransactionAdd: earn.handle_transaction,
    act.Registration: earn.handle_registration,
    act.CustomerUpdate: earn.handle_customer_update,
    act.Engagement: earn.handle_engagement,
    act.PointsRedemption: redeem.handle_redemption,
    act.RedemptionReversal: redeem.handle_reversal,
    act.TransactionReturn: returns.handle_return,
    act.PointsUnlock: lifecycle.handle_unlock,
    act.ManualAdjustment: adjust.handle_adjustment,
    act.DelayedAccrual: lifecycle.handle_due,
    act.PointsExpiry: lifecycle.handle_due,
}


def clone_state(state: CustomerState) -> CustomerState:
    """A copy the engine can change without touching `state` (see `state.copy_state`)."""
    return copy_state(state)


def apply(
    state: CustomerState | None,
    activity: Envelope,
    program: Program,
    source: SourceRef | None = None,
    *,
    in_place: bool = False,
) -> Outcome:
    """Apply one activity. The input state is left untouched unless `in_place` (the caller owns a copy)."""
    if state is None:
        state = new_state(activity.customer_id, activity.program_id)
    elif not in_place:
        state = clone_state(state)
    offset_key: str | None = None
    offset = 0
    if source is not None:
        offset_key = f"{source.topic}:{source.partition}"
        offset = source.offset  # (read once: a pydantic attribute read)
        if state.offsets.get(offset_key, -1) >= offset:
            return Outcome(state=state, duplicate=True)
    if state.seen(activity.event_id) or (state.parked and parking.holds(state, activity.event_id)):
        if offset_key is not None:
            state.offsets[offset_key] = offset
        return Outcome(state=state, duplicate=True)

    fx = Effects(state, activity, program, source)
    at = fx.time  # the event time with the engine's shared zone: cheap to compare with the lots' times
    if lifecycle.may_be_due(fx, at):
        lifecycle.materialise(fx, at)
    _run(fx, activity, fx.lifetime_before)
    if state.parked:
        parking.settle(fx, _run_parked)
    if retention.due(fx):
        retention.prune(fx, at)
    state.remember(fx.event_id)
    if offset_key is not None:
        state.offsets[offset_key] = offset
    if state.last_event_time is None or at > state.last_event_time:
        state.last_event_time = at
    return fx.finish()


def _run(fx: Effects, activity: Envelope, lifetime_before: Decimal) -> None:
    """The activity's handler, then what follows a valid one: rolling expiry and tier evaluation."""
    HANDLERS[type(activity)](fx, activity)
    if fx.outcome.rejected is None:
        expiry.roll_expiry(fx, fx.state.lifetime_earned - lifetime_before)  # a no-op unless a rolling event
        tiers.evaluate(fx)


def _run_parked(fx: Effects, activity: Envelope) -> None:
    """A parked activity whose reference just arrived, run as if it arrived now (effects act as it): the
    transitions due by its event time, then `_run`."""
    lifecycle.materialise(fx, activity.event_time)
    _run(fx, activity, fx.state.lifetime_earned)
