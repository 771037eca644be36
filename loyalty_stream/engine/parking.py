"""Parking: an activity that refers to a purchase or redemption the customer's state does not know yet waits for
it in the state instead of being refused.

Kafka orders a customer's records only within one topic, and purchases, returns, unlocks, redemptions and
reversals each have their own, so a return can be read before the purchase it returns (a backlog read side by
side always does that). A TransactionReturn or PointsUnlock of an unknown bill, or a RedemptionReversal of an
unknown redemption id, is kept in `CustomerState.parked` with where it was read, and produces nothing but a note
in `Outcome.parked`. Its event id is remembered like any other, so a redelivery is a duplicate.

Resolution: right after the activity that creates the reference (the TransactionAdd of that bill number, the
accepted PointsRedemption of that id), within the same `apply`, the waiting activities run in their own event
order, each as if it had just arrived: the transitions due by its event time first, then its handler with its
own event id, event time and source (`acting`). Its ledger entries, ids and times are then those in-order
processing gives (what happened in between stays where processing order put it, as for any late activity).
One that the program refuses then (a return past its window, unknown lines) is given up as rejected by the
program.

Giving up (`Outcome.given_up`; the processor dead-letters it with the original activity, as
`unresolved_reference`):
- window: a purchase (for a bill) or redemption (for a redemption id) of the customer more than the program's
  `retention.parking_window_hours` (default 24) after the parked activity. Within their own topic a customer's
  purchases arrive in order, so the awaited one is not coming. Measuring against the awaited kind rather than
  any activity keeps a backlog whose topics are read side by side, days of event time apart, from giving up
  returns whose purchase is merely further back in its own topic.
- retention: any activity of the customer past the program's return (reversal) window from the parked activity:
  the bill (redemption) could no longer be returned (reversed) even if it came.
- bound: more than PARKED_LIMIT waiting (the state must stay small): the earliest, by event time, goes.
- the awaited PointsRedemption was refused: there is nothing to reverse.

Dropped history is not recorded (remembering every dropped bill number would grow the state without bound), so a
return of a bill that retention already dropped cannot be told from one whose purchase is still to come: it
parks, is given up by the rules above, and its reason says the bill may have been dropped.

These rules are checked when the customer has an activity; the scheduler wakes an idle customer when the
retention rule can give one up (`next_give_up`, part of `lifecycle.next_transition`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal, NamedTuple

from loyalty_stream.engine import retention
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.state import CustomerState, Parked
from loyalty_stream.events import activities as act
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.events.outputs import SourceRef
from loyalty_stream.program.model import Program

PARKED_LIMIT: Final = 64
"""How many activities one customer may have waiting; beyond it the earliest is given up."""

ErrorClass = Literal["unresolved_reference", "rejected_by_program"]


@dataclass(frozen=True, slots=True)
class GivenUp:
    """A parked activity that will not run (or was refused when it did): the processor dead-letters it."""

    activity: Envelope
    source: SourceRef | None
    reason: str
    error_class: ErrorClass


class Reference(NamedTuple):
    bill: bool
    """A bill number (a return or unlock waits for its purchase); else a redemption id (a reversal)."""
    key: str


def reference(activity: Envelope) -> Reference:
    if isinstance(activity, act.RedemptionReversal):
        return Reference(False, activity.payload.redemption_id)
    if isinstance(activity, act.TransactionReturn | act.PointsUnlock):
        return Reference(True, activity.payload.bill_number)
    raise TypeError(f"{type(activity).__name__} refers to no bill or redemption")


def holds(state: CustomerState, event_id: str) -> bool:
    """Is this event parked? (a redelivery of it is a duplicate, even once it left the recent-id window)"""
    return any(p.activity.event_id == event_id for p in state.parked)


def window(program: Program) -> timedelta | None:
    hours = program.retention.parking_window_hours
    return timedelta(hours=hours) if hours > 0 else None


def _history(program: Program, ref: Reference) -> timedelta | None:
    """How long the program accepts a return (reversal) of a bill (redemption): beyond that, waiting is moot."""
    days = program.retention.return_window_days if ref.bill else program.retention.reversal_window_days
    return None if days is None else timedelta(days=days)


def next_give_up(state: CustomerState, program: Program) -> datetime | None:
    """When the earliest parked activity can be given up by time alone (its return or reversal window has
    passed): the scheduler wakes an idle customer then, so a return whose purchase never comes is
    dead-lettered even if the customer does nothing more. None when nothing waits or there is no window."""
    earliest = None
    for p in state.parked:
        history = _history(program, reference(p.activity))
        if history is not None:
            at = p.activity.event_time + history
            if earliest is None or at < earliest:
                earliest = at
    return earliest


@contextmanager
def acting(fx: Effects, activity: Envelope, source: SourceRef | None) -> Iterator[None]:
    """Run effects as `activity` read at `source`: entry ids, times and sources are then its own (the same
    as `lifecycle.acting_as`, which keeps the source of the activity at hand)."""
    real_source = fx.source
    real = fx.act_for(activity)
    fx.source = source
    try:
        yield
    finally:
        fx.restore(real)
        fx.source = real_source


# Parking ------------------------------------------------------------------------------------------------

def park(fx: Effects, *, applied: bool = False) -> None:
    """Keep the activity at hand until what it refers to arrives (or give it up at once: see the module).
    `applied`: it already did what it could without it (see `Parked.applied`)."""
    state, activity, out = fx.state, fx.activity, fx.outcome
    if holds(state, activity.event_id):
        return
    ref = reference(activity)
    parked = Parked(activity, fx.source, applied)
    span = window(fx.program)
    if span is None:
        _give_up(fx, parked, "parking is off (retention.parking_window_hours is 0)")
        return
    later = _newest_known(state, ref)
    if later is not None and later > activity.event_time + span:
        _give_up(fx, parked, _window_cause(fx.program, ref, later))
        return
    state.parked.append(parked)
    what = f"bill {ref.key!r}" if ref.bill else f"redemption {ref.key!r}"
    out.parked.append(f"{type(activity).__name__} {activity.event_id} waits for {what}, which this customer does "
                      f"not have yet (Kafka orders records only within a topic)"
                      + (": what did not need it was applied" if applied else ""))
    if len(state.parked) > PARKED_LIMIT:
        earliest = min(range(len(state.parked)), key=lambda i: (state.parked[i].activity.event_time, i))
        _give_up(fx, state.parked.pop(earliest),
                 f"more than {PARKED_LIMIT} activities were waiting for this customer, and it was the earliest")


def _newest_known(state: CustomerState, ref: Reference) -> datetime | None:
    """The newest purchase (redemption) time the state knows of: the awaited one would have come before it."""
    items = retention.raw(state.bills if ref.bill else state.redemptions)
    times = [retention.time_of(item, 1, "event_time" if ref.bill else "at") for item in items.values()]
    return max(times, default=None)


# After the activity at hand -----------------------------------------------------------------------------

Run = Callable[[Effects, Envelope], None]
"""Runs a parked activity that resolved as `core.apply` runs one that arrives: the transitions due by its event
time, its handler and what follows it (given by `core`, which owns that sequence)."""


def settle(fx: Effects, run: Run) -> None:
    """Run the parked activities the activity at hand resolved, then give up those that can no longer
    resolve (see the module). Called by `core.apply` when anything is parked."""
    state, activity, program = fx.state, fx.activity, fx.program
    out = fx.outcome
    if out.rejected is None and isinstance(activity, act.TransactionAdd):
        _resolve(fx, Reference(True, activity.payload.bill_number), run)
    elif isinstance(activity, act.PointsRedemption):
        rid = activity.payload.redemption_id or activity.event_id
        made = state.redemptions.get(rid)
        if made is not None and made.event_id == activity.event_id:
            _resolve(fx, Reference(False, rid), run)
        else:
            result = out.redemption_result
            code = result.reason_code if result is not None else None
            for p in [p for p in state.parked if reference(p.activity) == Reference(False, rid)]:
                state.parked.remove(p)
                _give_up(fx, p, f"redemption {rid!r} was refused ({code}): there is nothing to reverse")
    span = window(program)
    purchase = isinstance(activity, act.TransactionAdd)
    redemption = isinstance(activity, act.PointsRedemption)
    newest = retention.newest(state, activity.event_time)
    for p in list(state.parked):
        ref, at = reference(p.activity), p.activity.event_time
        cause = None
        if span is not None and (purchase if ref.bill else redemption) and activity.event_time > at + span:
            cause = _window_cause(program, ref, activity.event_time)
        else:
            history = _history(program, ref)
            if history is not None and newest >= at + history:
                days = history.days
                cause = (f"the customer's activity has reached {newest.isoformat()}, {days} days or more after it: "
                         f"past the {days}-day {'return' if ref.bill else 'reversal'} window")
        if cause is not None:
            state.parked.remove(p)
            _give_up(fx, p, cause)


def _resolve(fx: Effects, ref: Reference, run: Run) -> None:
    """Run the activities waiting for `ref`, which the activity at hand just created, in their event order."""
    state = fx.state
    ready = [(i, p) for i, p in enumerate(state.parked) if reference(p.activity) == ref]
    if not ready:
        return
    state.parked = [p for p in state.parked if reference(p.activity) != ref]
    ready.sort(key=lambda item: (item[1].activity.event_time, item[0]))
    for _, parked in ready:
        _resume(fx, parked, run)


def _resume(fx: Effects, parked: Parked, run: Run) -> None:
    out = fx.outcome
    outer_changes = out.tier_changes
    out.tier_changes = []  # tier evaluation walks the list from its start: give it this activity's only
    try:
        with acting(fx, parked.activity, parked.source):
            run(fx, parked.activity)
    finally:
        outer_changes.extend(out.tier_changes)
        out.tier_changes = outer_changes
    refused, out.rejected = out.rejected, None
    if refused is not None and not parked.applied:
        out.given_up.append(GivenUp(parked.activity, parked.source, refused, "rejected_by_program"))


# Giving up ----------------------------------------------------------------------------------------------

def _give_up(fx: Effects, parked: Parked, cause: str) -> None:
    """Report a parked activity that will not run (silently when it was already applied: nothing is lost)."""
    if parked.applied:
        return
    activity, program = parked.activity, fx.program
    ref = reference(activity)
    what = f"bill {ref.key!r}" if ref.bill else f"redemption {ref.key!r}"
    history = _history(program, ref)
    dropped = "" if history is None else (
        f" (or it was dropped after the {history.days}-day {'return' if ref.bill else 'reversal'} window)")
    fx.outcome.given_up.append(GivenUp(
        activity, parked.source,
        f"unresolved reference: {type(activity).__name__} {activity.event_id} refers to {what}, which this "
        f"customer does not have{dropped}; given up: {cause}",
        "unresolved_reference",
    ))


def _window_cause(program: Program, ref: Reference, later: datetime) -> str:
    kind = "purchases" if ref.bill else "redemptions"
    return (f"the customer's {kind} have reached {later.isoformat()}, more than "
            f"{program.retention.parking_window_hours} hours after it, without it")
