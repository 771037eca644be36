"""Points lifecycle: promised -> current after the delay, unlock, expiry reminders and expiry.

The engine has no clock, so a transition due at T (conversion, reminder, expiry) happens when the customer's
state is next evaluated at or after T: `materialise` runs before every activity, and the scheduler emits a
`DelayedAccrual` / `PointsExpiry` activity at `next_due` for idle customers. Every output of a transition is
keyed by the lot / expiry group / due time and stamped with the due time, never with the activity that
happened to trigger it, so both paths give identical ledger entries, notifications, coupons and tier changes.

Order: transitions apply in due-time order; at one instant conversions first (then the program's
DelayedAccrual rule sets, once for the batch), then reminders, then expiries; ties broken by lot / group id.

Conversion is automatic: promised points become current when their delay elapses whether or not the program
has DelayedAccrual rule sets (a promise is kept, and a conditional conversion would leave points stuck in
the promised bucket with a due time forever in the past). The rule sets run right after a batch converts and
are the hook for its side effects (message, tier upgrade, coupon); their `convert` action is accepted for
parity with the document's "Delayed Accrual action" and does nothing more, as the points are already current.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from itertools import groupby
from operator import attrgetter
from typing import Any, Final, Literal, NamedTuple
from zoneinfo import ZoneInfo

from loyalty_stream.engine import parking, rules
from loyalty_stream.engine.contracts import trusted
from loyalty_stream.engine.effects import CURRENT, PROMISED, Effects
from loyalty_stream.engine.expiry import expiry_date, local_date, local_midnight, reminder_due
from loyalty_stream.engine.facts import facts
from loyalty_stream.engine.ids import derive_id
from loyalty_stream.engine.state import ZERO, CustomerState, Lot
from loyalty_stream.engine.times import TextMemo, fixed
from loyalty_stream.events import activities as act
from loyalty_stream.events.envelope import SCHEMA_VERSION, Envelope
from loyalty_stream.events.outputs import LedgerKind
from loyalty_stream.program.model import Program
from loyalty_stream.program.rules import ConvertAction, Rule

DueKind = Literal["DelayedAccrual", "PointsExpiry"]

_KIND_CONVERT: Final = LedgerKind.CONVERT  # (Enum members as constants: see `effects.EARN`)
_KIND_EXPIRE: Final = LedgerKind.EXPIRE
CONVERT: Final = 0
REMIND: Final = 1
EXPIRE: Final = 2
"""Order of transitions due at the same instant."""


def available_after(event_time: datetime, delay_days: int, zone: ZoneInfo) -> datetime:
    """Delayed points become current the morning after event date + N days, in the program's zone
    (28 Sep + 1 day -> 00:00 local on 30 Sep)."""
    return available_from(local_date(event_time, zone), delay_days, zone)


def available_from(event_day: date, delay_days: int, zone: ZoneInfo) -> datetime:
    """`available_after` an event whose local date is `event_day`."""
    return local_midnight(event_day + timedelta(days=delay_days + 1), zone)


def available_after_activity(fx: Effects, delay_days: int) -> datetime:
    """`available_after` the activity's time, computed once per activity and delay."""
    memo = fx.memo_for()
    key = ("available_after", delay_days)
    at: datetime | None = memo.get(key)
    if at is None:
        at = memo[key] = available_from(fx.local_date(), delay_days, fx.known.zone)
    return at


_STAMPS: Final = TextMemo()


def stamp(at: datetime) -> str:
    """A due time as text for ids: UTC, so the same instant gives the same id whatever offset it carries.
    Remembered per date-time object (`TextMemo`): the lots of a purchase share their due times."""
    text = _STAMPS.get(at)
    return _STAMPS.put(at, at.astimezone(UTC).isoformat()) if text is None else text


# Pending transitions -------------------------------------------------------------------------------------
class Transition(NamedTuple):
    """A pending transition (a named tuple: a materialisation builds one per due lot, and a frozen dataclass
    costs three times as much to build)."""

    at: datetime
    order: int
    key: str
    lot: Lot
    days_before: int = 0

    def sort_key(self) -> tuple[datetime, int, str, int]:
        return self.at.astimezone(UTC), self.order, self.key, self.days_before


_tuple_new: Final[Any] = tuple.__new__


def _transition(at: datetime, order: int, key: str, lot: Lot, days_before: int = 0) -> Transition:
    """`Transition(at, order, key, lot, days_before)`: what the named tuple's `__new__` does (`tuple.__new__` on
    the fields), without running that interpreted function."""
    transition: Transition = _tuple_new(Transition, (at, order, key, lot, days_before))
    return transition


@dataclass(frozen=True, slots=True)
class Due:
    """The earliest pending transition of a customer: when, and which scheduler activity carries it."""

    at: datetime
    kind: DueKind


def _reminder_applies(lot: Lot, days_before: int, due: datetime) -> bool:
    """Once per offset; never for an offset already behind the lot when it was earned (no stale reminders)."""
    assert lot.expires_at is not None
    return days_before not in lot.reminded and lot.earned_at < due < lot.expires_at


_ReminderDues = tuple[tuple[int, datetime], ...]
"""(days before, due time) per reminder offset of one expiry instant, earliest due first."""

_REMINDER_DUES: Final[dict[tuple[ZoneInfo, tuple[int, ...]], dict[datetime, _ReminderDues]]] = {}
_REMINDER_DUES_LIMIT: Final = 16384


def _reminder_table(zone: ZoneInfo, offsets: tuple[int, ...]) -> dict[datetime, _ReminderDues]:
    """Reminder due times by expiry instant, kept across calls: they are a pure function of the instant, the
    zone and the offsets, and lots share a few expiry instants (local midnights). Aware date-times hash and
    compare as instants, so one entry serves every offset an instant is written in. Bounded: cleared when full
    (expiries clamped to event times are arbitrary instants)."""
    table = _REMINDER_DUES.get((zone, offsets))
    if table is None:
        table = _REMINDER_DUES[(zone, offsets)] = {}
    elif len(table) >= _REMINDER_DUES_LIMIT:
        table.clear()
    return table


def _reminder_dues(table: dict[datetime, _ReminderDues], expires_at: datetime, zone: ZoneInfo,
                   offsets: tuple[int, ...]) -> _ReminderDues:
    """The miss path of a `table` lookup (callers try `table.get` inline first): compute and keep."""
    dues = table[expires_at] = tuple((n, reminder_due(expires_at, n, zone)) for n in offsets)
    return dues


def _pending(state: CustomerState, program: Program, until: datetime | None) -> list[Transition]:
    """Every pending transition due at or before `until` (all when None), unordered."""
    known = facts(program)
    zone = known.zone
    offsets = known.reminder_offsets
    # Reminders are looked at only for lots expiring within the horizon after `until` (a prefilter: the
    # horizon has a day of slack over the largest offset, so how it is added cannot matter).
    if until is not None:
        until = fixed(until)  # compared with every lot: see engine.times
    reminders_until = None if until is None or not offsets else until + known.reminder_horizon
    table = _reminder_table(zone, offsets) if offsets else None
    reminded: set[tuple[datetime, int]] = set()
    pending: list[Transition] = []
    for lot in state.lots:
        if lot.remaining <= ZERO:
            continue
        if lot.promised and lot.available_at is not None and (until is None or lot.available_at <= until):
            pending.append(_transition(lot.available_at, CONVERT, lot.lot_id, lot))
        expires_at = lot.expires_at
        if expires_at is None:
            continue
        if until is None or expires_at <= until:
            pending.append(_transition(expires_at, EXPIRE, lot.lot_id, lot))
        if table is None or (reminders_until is not None and expires_at > reminders_until):
            continue
        dues = table.get(expires_at)
        if dues is None:
            dues = _reminder_dues(table, expires_at, zone, offsets)
        for n, due in dues:
            # `_reminder_applies`, then once per expiry group (aware date-times hash and compare as instants)
            if (
                (until is None or due <= until) and n not in lot.reminded and lot.earned_at < due < expires_at
                and (expires_at, n) not in reminded
            ):
                reminded.add((expires_at, n))
                pending.append(_transition(due, REMIND, stamp(expires_at), lot, n))
    return pending


def may_be_due(fx: Effects, until: datetime) -> bool:
    """Whether any transition of the lots the activity started with can be due at or before `until`: cheap
    (from the bounds `Effects` took while summing the balances), so most activities skip the full scan."""
    until = fixed(until)
    first = fx.first_available
    if first is not None and first <= until:
        return True
    expiry = fx.first_expiry
    return expiry is not None and expiry - fx.known.reminder_horizon <= until


_BY_DUE: Final = attrgetter("at", "order", "key", "days_before")
_AT: Final = attrgetter("at")


def _utc(transition: Transition) -> datetime:
    return transition.at.astimezone(UTC)


def _in_order(state: CustomerState, program: Program, until: datetime | None) -> tuple[list[Transition], bool]:
    """`transitions`, and whether their due times all have a fixed-offset `timezone` (what the engine computes
    and decodes: `engine.times`). Those compare and test equal exactly as their UTC times do (no DST fold), so
    they sort by `_BY_DUE` in the very order `Transition.sort_key` gives, and group by instant, without a
    conversion and a Python call per transition. Any other time zone takes `sort_key`."""
    pending = _pending(state, program, until)
    fixed_offsets = all(type(t.at.tzinfo) is timezone for t in pending)
    if len(pending) > 1:
        pending.sort(key=_BY_DUE if fixed_offsets else Transition.sort_key)
    return pending, fixed_offsets


def transitions(state: CustomerState, program: Program, until: datetime | None = None) -> list[Transition]:
    """Every pending transition (due at or before `until` when given), in the order they must apply."""
    return _in_order(state, program, until)[0]


def _batches(state: CustomerState, program: Program, until: datetime) -> Iterator[list[Transition]]:
    """`transitions` cut into the batches due at one instant (taken before the first batch applies)."""
    pending, fixed_offsets = _in_order(state, program, until)
    for _, group in groupby(pending, key=_AT if fixed_offsets else _utc):
        yield list(group)


def next_transition(state: CustomerState, program: Program) -> Due | None:
    """The earliest pending transition; a conversion due at that instant makes it a DelayedAccrual. A parked
    activity that its window lets go (`parking.next_give_up`) is due as a PointsExpiry (an evaluation with
    nothing of its own to do) when nothing else is due before it.

    It runs for every changed customer of every batch, so it is one pass over the lots keeping the least
    (instant, order, lot id) seen, without building transitions: the choice `min(_pending(...),
    key=Transition.sort_key)` makes (date-times compared directly, as `_pending` compares them with `until`:
    instants for the engine's fixed offsets, `engine.times`; ties to the lower order, then lot id, then the
    first seen). Reminders need neither the dedupe per expiry group (a repeat has the same sort key) nor their
    key: reminders due at one instant are the same value (`reminder_due`: the zone's shared offset).
    """
    known = facts(program)
    offsets = known.reminder_offsets
    zone = known.zone
    table = _reminder_table(zone, offsets) if offsets else None
    at: datetime | None = None  # the earliest so far: its time, order and (conversion, expiry) lot id
    order = EXPIRE
    lot_id = ""
    for lot in state.lots:
        if lot.remaining <= ZERO:
            continue
        if lot.promised:
            available = lot.available_at
            if available is not None and (
                at is None or available < at
                or (not at < available and (order != CONVERT or lot.lot_id < lot_id))
            ):
                at, order, lot_id = available, CONVERT, lot.lot_id
        expires_at = lot.expires_at
        if expires_at is None:
            continue
        if at is None or expires_at < at or (not at < expires_at and order == EXPIRE and lot.lot_id < lot_id):
            at, order, lot_id = expires_at, EXPIRE, lot.lot_id
        if table is None or at is None:  # (`at` is set by now: the test is for the type checker)
            continue
        dues = table.get(expires_at)
        if dues is None:
            dues = _reminder_dues(table, expires_at, zone, offsets)
        for n, due in dues:  # `_reminder_applies`, tested last: most dues are later than the earliest so far
            if (
                (due < at or (order == EXPIRE and not at < due))
                and n not in lot.reminded and lot.earned_at < due < expires_at
            ):
                at, order = due, REMIND
    give_up = parking.next_give_up(state, program) if state.parked else None
    if give_up is not None and (at is None or give_up < at):
        return Due(give_up, "PointsExpiry")
    if at is None:
        return None
    return Due(at, "DelayedAccrual" if order == CONVERT else "PointsExpiry")


def next_due(state: CustomerState, program: Program) -> datetime | None:
    """When the scheduler must next evaluate this customer (earliest conversion, reminder or expiry)."""
    due = next_transition(state, program)
    return None if due is None else due.at


# Applying transitions ------------------------------------------------------------------------------------
def convert(fx: Effects, lot: Lot, at: datetime, *, scheduled: bool, reason: str | None = None) -> Decimal:
    """Promised -> current: one CONVERT entry whose balance_after/promised_after show both buckets move."""
    amount = fx.unpromise(lot)
    if not scheduled:
        lot.available_at = at
    fx.settle_debt(lot)
    fx.entry(kind=_KIND_CONVERT, bucket=CURRENT, amount=amount, key=(lot.lot_id,), at=at,
             scheduled=scheduled, lot=lot, reason=reason, source_type="DelayedAccrual" if scheduled else None)
    return amount


def expire(fx: Effects, lot: Lot, at: datetime) -> None:
    """Take what is left of the lot; a lot still promised at its expiry leaves the promised bucket."""
    amount = fx.empty(lot)
    fx.state.expired += amount
    bucket = PROMISED if lot.promised else CURRENT
    fx.entry(kind=_KIND_EXPIRE, bucket=bucket, amount=-amount, key=(lot.lot_id, stamp(at)), at=at,
             scheduled=True, lot=lot, source_type="PointsExpiry")


class acting_as:  # a function in use (`with acting_as(fx, activity):`); a class, as cheaper than a generator
    """Run effects on behalf of a due transition: `fx.notify/coupon/change_tier` then derive their ids and
    times from this synthetic activity (keyed by due time) instead of the activity that triggered it."""

    __slots__ = ("activity", "fx", "real")

    def __init__(self, fx: Effects, activity: Envelope) -> None:
        self.fx = fx
        self.activity = activity

    def __enter__(self) -> None:
        self.real = self.fx.act_for(self.activity)

    def __exit__(self, *exc: object) -> None:
        self.fx.restore(self.real)


@dataclass(slots=True)
class Conversion:
    """What a DelayedAccrual rule set evaluates: the promised points that became current at `due_at`.

    `activity` is the synthetic DelayedAccrual its outputs are attributed to (id keyed by customer and due
    time); it matches the scheduler's event in meaning, not in id, so a redelivered scheduler event stays a
    no-op.
    """

    activity: act.DelayedAccrual
    due_at: datetime
    points: Decimal
    lot_ids: tuple[str, ...]
    bill_numbers: tuple[str, ...]

    def __init__(self, activity: act.DelayedAccrual, due_at: datetime, points: Decimal, lot_ids: tuple[str, ...],
                 bill_numbers: tuple[str, ...]) -> None:
        # Written out (hence not frozen): under mypyc an explicit __init__ is compiled, the dataclass-generated
        # one runs interpreted (a frozen one through `object.__setattr__` per field).
        self.activity = activity
        self.due_at = due_at
        self.points = points
        self.lot_ids = lot_ids
        self.bill_numbers = bill_numbers


def _convert_action(fx: Effects, action: ConvertAction, rule: Rule, context: Any, index: int) -> None:
    """The document's Delayed Accrual action: the batch is already converted (see the module docstring)."""


ACCRUAL_HANDLERS: Final[dict[str, rules.ActionHandler]] = {"convert": _convert_action}


def due_activity(program_id: str, customer_id: str, at: datetime, kind: DueKind, event_id: str) -> Envelope:
    """A DelayedAccrual / PointsExpiry activity at `at`: what the scheduler publishes, and the synthetic cause
    of the outputs of due transitions."""
    if kind == "DelayedAccrual":
        return act.DelayedAccrual(event_id=event_id, program_id=program_id, customer_id=customer_id,
                                  event_time=at, payload=act.DelayedAccrualPayload(due_at=at))
    return act.PointsExpiry(event_id=event_id, program_id=program_id, customer_id=customer_id,
                            event_time=at, payload=act.PointsExpiryPayload(due_at=at))


def _synthetic(state: CustomerState, at: datetime, kind: DueKind, event_id: str) -> Envelope:
    """`due_activity` for the engine's own use: its ids come from a validated state, so it is built without
    validation (the same model, field for field)."""
    payload_cls = act.DelayedAccrualPayload if kind == "DelayedAccrual" else act.PointsExpiryPayload
    activity_cls = act.DelayedAccrual if kind == "DelayedAccrual" else act.PointsExpiry
    payload = trusted(payload_cls, {"due_at": at})
    return trusted(activity_cls, {"event_id": event_id, "program_id": state.program_id,
                                  "customer_id": state.customer_id, "event_time": at,
                                  "schema_version": SCHEMA_VERSION, "type": kind, "payload": payload})


def _accrual_rules(fx: Effects, at: datetime, converted: list[tuple[Lot, Decimal]]) -> None:
    if not converted or not fx.known.accrual_rules:
        return
    state = fx.state
    synthetic = _synthetic(state, at, "DelayedAccrual", derive_id("da", state.program_id, state.customer_id, stamp(at)))
    assert isinstance(synthetic, act.DelayedAccrual)
    context = Conversion(
        activity=synthetic, due_at=at, points=sum((amount for _, amount in converted), ZERO),
        lot_ids=tuple(lot.lot_id for lot, _ in converted),
        bill_numbers=tuple(sorted({lot.bill_number for lot, _ in converted if lot.bill_number is not None})),
    )
    with acting_as(fx, synthetic):
        rules.run_rule_sets(fx, "DelayedAccrual", context, ACCRUAL_HANDLERS)


def _remind(fx: Effects, transition: Transition) -> None:
    """One notification per expiry group (lots expiring at the same instant) and offset."""
    state, program = fx.state, fx.program
    expires_at = transition.lot.expires_at
    assert expires_at is not None
    n, due = transition.days_before, transition.at
    # Same expiry instant (aware datetimes compare as instants: the same test as equal UTC stamps).
    group = [
        lot for lot in state.lots
        if lot.expires_at == expires_at and lot.remaining > ZERO and _reminder_applies(lot, n, due)
    ]
    if not group:
        return
    for lot in group:
        lot.reminded = (*lot.reminded, n)
    points = sum((lot.remaining for lot in group), ZERO)
    synthetic = _synthetic(state, due, "PointsExpiry", derive_id("rm", state.program_id, state.customer_id,
                                                                 transition.key, str(n)))
    with acting_as(fx, synthetic):
        fx.notify(program.reminders.channel, program.reminders.template, ("reminder", transition.key, str(n)),
                  {"points": f"{points:f}", "expires_on": expiry_date(expires_at, program.zone).isoformat(),
                   "days_before": str(n)})


def materialise(fx: Effects, until: datetime) -> None:
    """Apply every conversion, reminder and expiry due at or before `until`, in due-time order."""
    for batch in _batches(fx.state, fx.program, until):
        converted = [
            (t.lot, convert(fx, t.lot, t.at, scheduled=True))
            for t in batch if t.order == CONVERT and t.lot.promised and t.lot.remaining > ZERO
        ]
        if converted:
            _accrual_rules(fx, batch[0].at, converted)
        for t in batch:
            if t.order == REMIND:
                _remind(fx, t)
            elif t.order == EXPIRE and t.lot.remaining > ZERO:
                expire(fx, t.lot, t.at)


def handle_due(fx: Effects, activity: act.DelayedAccrual | act.PointsExpiry) -> None:
    """Scheduler events carry no work of their own: materialisation up to their time did it."""


def handle_unlock(fx: Effects, activity: act.PointsUnlock) -> None:
    """End the return window early: convert the bill's promised points now (or only the named lines').

    Line-level unlock applies to lots earned per line item; a bill-level lot is unlocked by a whole-bill
    unlock. Unlocking is an operator action, not a delay elapsing, so DelayedAccrual rule sets do not run.
    A bill this customer has neither a purchase nor lots of waits for its purchase (`engine.parking`): it may
    still be on its way on another topic.
    """
    bill_number = activity.payload.bill_number
    state = fx.state
    if bill_number not in state.bills and not any(lot.bill_number == bill_number for lot in state.lots):
        parking.park(fx)
        return
    wanted = set(activity.payload.item_ids)
    for lot in state.lots:
        if lot.promised and lot.bill_number == bill_number and lot.remaining > ZERO and (
            not wanted or lot.line_item_id in wanted
        ):
            convert(fx, lot, fx.at, scheduled=False, reason="unlocked")
