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
from operator import itemgetter
from typing import Any, Final, Literal, NamedTuple
from zoneinfo import ZoneInfo

from loyalty_stream.engine import parking, rules
from loyalty_stream.engine.contracts import field_template, trusted
from loyalty_stream.engine.effects import CURRENT, PROMISED, Effects
from loyalty_stream.engine.expiry import expiry_date, local_date, local_midnight, reminder_due
from loyalty_stream.engine.facts import facts
from loyalty_stream.engine.ids import derive_id
from loyalty_stream.engine.state import ZERO, CustomerState, Lot
from loyalty_stream.engine.times import IdentityMemo, TextMemo, fixed
from loyalty_stream.events import activities as act
from loyalty_stream.events.envelope import SCHEMA_VERSION, Contract, Envelope
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


class _LastAvailable:
    """The last `available_after_activity` answer and what it was for: the lots of an activity ask it one after
    another, and a date-time and a zone compared by identity cost far less than building and hashing a memo key."""

    __slots__ = ("at", "delay", "time", "zone")

    def __init__(self) -> None:
        self.time: datetime | None = None  # (held: identity is only compared while it is alive)
        self.zone: ZoneInfo | None = None
        self.delay = -1
        self.at: datetime | None = None


_LAST_AVAILABLE: Final = _LastAvailable()
_AVAILABLE: Final[dict[tuple[date, int, ZoneInfo], datetime]] = {}
"""`available_from` by (local event date, delay, zone), kept across activities: the activities of a day share it,
and computing it (a date shifted by a `timedelta` and a cached local midnight) costs a dozen lookups. Bounded:
cleared when full."""
_AVAILABLE_LIMIT: Final = 4096


def available_after_activity(fx: Effects, delay_days: int) -> datetime:
    """`available_after` the activity's time: a pure function of that date-time object, the zone and the delay."""
    last = _LAST_AVAILABLE
    time = fx.time
    zone = fx.known.zone
    at = last.at
    if at is not None and last.time is time and last.zone is zone and last.delay == delay_days:
        return at
    day = fx.local_date()
    key = (day, delay_days, zone)
    at = _AVAILABLE.get(key)
    if at is None:
        if len(_AVAILABLE) >= _AVAILABLE_LIMIT:
            _AVAILABLE.clear()
        at = _AVAILABLE[key] = available_from(day, delay_days, zone)
    last.time = time
    last.zone = zone
    last.delay = delay_days
    last.at = at
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


@dataclass(slots=True)
class Due:
    """The earliest pending transition of a customer: when, and which scheduler activity carries it. A value:
    never changed once built (equal and hashed by its fields)."""

    at: datetime
    kind: DueKind

    def __init__(self, at: datetime, kind: DueKind) -> None:
        # Written out, and hence not frozen: under mypyc this `__init__` is compiled, where a frozen dataclass's
        # generated one runs interpreted (`object.__setattr__` per field), a fifth of a `next_transition`.
        self.at = at
        self.kind = kind

    def __hash__(self) -> int:
        return hash((self.at, self.kind))


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


class _ProgramDues:
    """What the transition scans read of a program, kept per program object (`_program_dues`): its facts and
    reminder table, and the reminder notification's fields. Reading them through `facts` and `_reminder_table`
    cost about 1,500 instructions per scan (a pydantic attribute, tuple hashing), a tenth of a
    `next_transition`."""

    __slots__ = ("channel", "dues_not_after_expiry", "expiry_days", "horizon", "offsets", "prefilter", "program",
                 "table", "template", "zone")

    def __init__(self, program: Program) -> None:
        known = facts(program)
        self.program = program  # held: the entry's key is its id
        self.zone = known.zone
        self.offsets = known.reminder_offsets
        self.horizon = known.reminder_horizon
        self.table = _reminder_table(known.zone, known.reminder_offsets) if known.reminder_offsets else None
        self.prefilter = known.reminder_horizon >= timedelta(0)
        """Whether a lot expiring after `until + horizon` has no transition due by `until` (`_collect`)."""
        self.dues_not_after_expiry = bool(known.reminder_offsets) and known.reminder_offsets[0] >= 0
        """Whether a lot's earliest reminder is due at or before its expiry (`reminder_due` of an offset >= 0)."""
        self.channel = program.reminders.channel
        self.template = program.reminders.template
        self.expiry_days = TextMemo(1024)
        """`expiry_date(...).isoformat()` per expiry instant (`_remind`)."""


_PROGRAM_DUES: Final[dict[int, _ProgramDues]] = {}
_PROGRAM_DUES_LIMIT: Final = 64
_LAST_DUES: Final[list[_ProgramDues]] = []
"""The entry used last (most calls are for the program of the call before), found without boxing an id."""


def _program_dues(program: Program) -> _ProgramDues:
    """`_ProgramDues` of `program`, by identity (programs are immutable; each entry holds its program, so an id
    is not reused while it is kept). Bounded: cleared when full."""
    found = _LAST_DUES[0] if _LAST_DUES else None
    if found is None or found.program is not program:
        found = _PROGRAM_DUES.get(id(program))
        if found is None or found.program is not program:
            if len(_PROGRAM_DUES) >= _PROGRAM_DUES_LIMIT:
                _PROGRAM_DUES.clear()
            found = _PROGRAM_DUES[id(program)] = _ProgramDues(program)
        if _LAST_DUES:
            _LAST_DUES[0] = found
        else:
            _LAST_DUES.append(found)
    table = found.table
    if table is not None and len(table) >= _REMINDER_DUES_LIMIT:
        table.clear()  # (what `_reminder_table` does on every use)
    return found


_FIXED_OFFSET: Final = timezone
_Pending = tuple[datetime, int, str, int, int, Lot]
"""A pending transition as the engine collects it: (due time, order, key, days before, position, lot). A plain
tuple, built inline (a `Transition` is a Python-level `tuple.__new__` call), and a list of them sorts without a
key function: the position (collection order) ends every key before the lot, so the sort never compares lots
and keeps the order of the stable sort by `Transition.sort_key` on ties (repeated lot ids)."""


def _collect(state: CustomerState, dues: _ProgramDues, until: datetime | None,
             until_fixed: bool = False) -> tuple[list[_Pending], bool]:
    """Every pending transition due at or before `until` (all when None), in the order they must apply, and
    whether their due times all have a fixed-offset `timezone` (what the engine computes and decodes:
    `engine.times`). Those compare and test equal exactly as their UTC times do (no DST fold), so they sort as
    tuples in the very order `Transition.sort_key` gives, and group by instant, without a conversion per
    transition. Any other time zone sorts and groups by UTC time (`_utc_key`). `until_fixed`: `until` is
    already `fixed` (an activity's `Effects.time`)."""
    zone = dues.zone
    offsets = dues.offsets
    table = dues.table
    # Reminders are looked at only for lots expiring within the horizon after `until` (a prefilter: the
    # horizon has a day of slack over the largest offset, so how it is added cannot matter). With a horizon
    # >= 0, such a lot's expiry is not due either, so the prefilter is tested first.
    if until is not None and not until_fixed:
        until = fixed(until)  # compared with every lot: see engine.times
    reminders_until = None if until is None or table is None else until + dues.horizon
    skip_after = reminders_until if dues.prefilter else None
    reminded: set[tuple[datetime, int]] | None = None
    pending: list[_Pending] = []
    far: datetime | None = None  # the last expiry seen after `skip_after` (lots share date-time objects)
    # The last date-time objects seen to be at or before `skip_after` (an expiry), `until` (a conversion, an
    # expiry): lots share them, and an identity test settles what a comparison would.
    near: datetime | None = None
    converting: datetime | None = None
    expiring: datetime | None = None
    for lot in state.lots:
        expires_at = lot.expires_at
        if until is not None and skip_after is not None and expires_at is not None:
            if expires_at is not near and (expires_at is far or expires_at > skip_after):
                far = expires_at  # nothing of its expiry is due: only a conversion may be
                if lot.promised:
                    available = lot.available_at
                    if available is not None and (available is converting or available <= until) and (
                        lot.remaining > ZERO
                    ):
                        converting = available
                        pending.append((available, CONVERT, lot.lot_id, 0, len(pending), lot))
                continue
            near = expires_at
        if lot.remaining <= ZERO:
            continue
        if lot.promised:
            available = lot.available_at
            if available is not None and (until is None or available is converting or available <= until):
                converting = available
                pending.append((available, CONVERT, lot.lot_id, 0, len(pending), lot))
        if expires_at is None:
            continue
        if until is None or expires_at is expiring or expires_at <= until:
            expiring = expires_at
            pending.append((expires_at, EXPIRE, lot.lot_id, 0, len(pending), lot))
        # (With `skip_after`, a lot here expires at or before it: `reminders_until`.)
        if table is None or (skip_after is None and reminders_until is not None and expires_at > reminders_until):
            continue
        lot_dues = table.get(expires_at)
        if lot_dues is None:
            lot_dues = _reminder_dues(table, expires_at, zone, offsets)
        for n, due in lot_dues:
            if until is not None and due > until:
                break  # (dues are in time order: so are the rest)
            # `_reminder_applies`, then once per expiry group (aware date-times hash and compare as instants)
            if n not in lot.reminded and lot.earned_at < due < expires_at:
                if reminded is None:
                    reminded = set()
                elif (expires_at, n) in reminded:
                    continue
                reminded.add((expires_at, n))
                pending.append((due, REMIND, stamp(expires_at), n, len(pending), lot))
    fixed_offsets = True
    seen: datetime | None = None  # the last due time checked (lots share date-time objects)
    one_instant = True  # every transition a conversion due at one date-time object (a purchase's lots)
    for t in pending:
        if t[1] != CONVERT:
            one_instant = False
        if t[0] is not seen:
            if seen is not None:
                one_instant = False
            seen = t[0]
            if type(seen.tzinfo) is not _FIXED_OFFSET:
                fixed_offsets = False
                break
    if len(pending) > 1:
        if fixed_offsets:
            if one_instant:
                # The keys differ only from the lot id on (then days before 0, then position: the list's order,
                # kept by a stable sort): by lot id alone, text compared as text, not tuple by tuple.
                pending.sort(key=_LOT_ID)
            else:
                pending.sort()
        else:
            pending.sort(key=_utc_key)
    return pending, fixed_offsets


_LOT_ID: Final = itemgetter(2)
"""A pending transition's key (a conversion's lot id)."""


def _utc_key(t: _Pending) -> tuple[datetime, int, str, int, int]:
    return t[0].astimezone(UTC), t[1], t[2], t[3], t[4]


def _instant(at: datetime, fixed_offsets: bool) -> datetime:
    """What transitions due at one instant share: `at` itself when every due time has a fixed offset."""
    return at if fixed_offsets else at.astimezone(UTC)


def may_be_due(fx: Effects, until: datetime) -> bool:
    """Whether any transition of the lots the activity started with can be due at or before `until`: cheap
    (from the bounds `Effects` took while summing the balances), so most activities skip the full scan."""
    until = fixed(until)
    first = fx.first_available
    if first is not None and first <= until:
        return True
    expiry = fx.first_expiry
    return expiry is not None and expiry - fx.known.reminder_horizon <= until


def _as_transition(t: _Pending) -> Transition:
    return _transition(t[0], t[1], t[2], t[5], t[3])


def transitions(state: CustomerState, program: Program, until: datetime | None = None) -> list[Transition]:
    """Every pending transition (due at or before `until` when given), in the order they must apply."""
    return [_as_transition(t) for t in _collect(state, _program_dues(program), until)[0]]


def _batch_ends(pending: list[_Pending], fixed_offsets: bool) -> list[int]:
    """Where each batch of `pending` ends: a batch is the transitions due at one instant (`_instant`)."""
    ends: list[int] = []
    count = len(pending)
    index = 0
    while index < count:
        at = pending[index][0]
        instant = _instant(at, fixed_offsets)
        index += 1
        # (Transitions due at one instant mostly share its date-time object: identity settles the test.)
        while index < count and (pending[index][0] is at or instant == _instant(pending[index][0], fixed_offsets)):
            index += 1
        ends.append(index)
    return ends


def _batches(state: CustomerState, program: Program, until: datetime) -> Iterator[list[Transition]]:
    """`transitions` cut into the batches due at one instant (taken before the first batch applies): the
    batches `materialise` applies."""
    pending, fixed_offsets = _collect(state, _program_dues(program), until)
    start = 0
    for end in _batch_ends(pending, fixed_offsets):
        yield [_as_transition(t) for t in pending[start:end]]
        start = end


def next_transition(state: CustomerState, program: Program) -> Due | None:
    """The earliest pending transition; a conversion due at that instant makes it a DelayedAccrual. A parked
    activity that its window lets go (`parking.next_give_up`) is due as a PointsExpiry (an evaluation with
    nothing of its own to do) when nothing else is due before it.

    It runs for every changed customer of every batch, so it is two passes over the lots (conversions, then expiries
    and reminders) keeping the least (instant, order, lot id) seen, without building transitions: the choice
    `min(_pending(...), key=Transition.sort_key)` makes (date-times compared directly, as `_collect` compares them
    with `until`: instants for the engine's fixed offsets, `engine.times`; ties to the lower order, then lot id,
    then the first seen). Reminders need neither the dedupe per expiry group (a repeat has the same sort key) nor
    their key: reminders due at one instant are the same value (`reminder_due`: the zone's shared offset). A lot
    whose earliest reminder is due after the earliest so far (and not after its expiry) has nothing earlier: one
    comparison settles it (most lots).
    """
    dues = _program_dues(program)
    offsets = dues.offsets
    zone = dues.zone
    table = dues.table
    settles = dues.dues_not_after_expiry
    at: datetime | None = None  # the earliest so far: its time, order and (conversion, expiry) lot id
    order = EXPIRE
    lot_id = ""
    lots = state.lots
    # Conversions first: the earliest one (usually days away, where expiries are months away) then settles
    # most lots' expiries with one comparison. The choice is the same: a conversion wins every tie with an
    # expiry or reminder (its order), and each kind is still visited in the lots' order (first seen wins).
    for lot in lots:
        if lot.promised:
            available = lot.available_at
            # (The lots of a purchase share their date-time objects: the very object `at` is equal, a tie,
            # settled without comparing instants.)
            if available is not None and (
                at is None
                or (available is at and lot.lot_id < lot_id)
                or (available is not at and (available < at or (not at < available and lot.lot_id < lot_id)))
            ) and lot.remaining > ZERO:
                at, order, lot_id = available, CONVERT, lot.lot_id
    settled: datetime | None = None  # the last expiry settled (lots share date-time objects; `at` only falls)
    for lot in lots:
        expires_at = lot.expires_at
        if expires_at is None or expires_at is settled:
            continue
        lot_dues: _ReminderDues | None = None
        if table is not None:
            lot_dues = table.get(expires_at)
            if lot_dues is None:
                lot_dues = _reminder_dues(table, expires_at, zone, offsets)
            if settles and at is not None and at < lot_dues[0][1]:
                settled = expires_at  # at < earliest reminder <= expiry: neither is earlier, nor ties
                continue
        if lot.remaining <= ZERO:  # (a promised lot too: its expiry takes what is left)
            continue
        if at is None or (
            (order == EXPIRE and lot.lot_id < lot_id) if expires_at is at
            else (expires_at < at or (order == EXPIRE and not at < expires_at and lot.lot_id < lot_id))
        ):
            at, order, lot_id = expires_at, EXPIRE, lot.lot_id
        if lot_dues is None:
            continue
        for n, due in lot_dues:  # `_reminder_applies`, tested last: most dues are later than the earliest so far
            if due is at:  # (a due time shared with the lots of its expiry instant: equal)
                if order != EXPIRE:
                    continue
            elif not due < at:
                if at < due:
                    break  # (dues are in time order: so are the rest)
                if order != EXPIRE:
                    continue
            if n not in lot.reminded and lot.earned_at < due < expires_at:
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


_ACCRUAL: Final = act.DelayedAccrual  # (module attributes as constants: read without a lookup by name)
_ACCRUAL_PAYLOAD: Final = act.DelayedAccrualPayload
_EXPIRY: Final = act.PointsExpiry
_EXPIRY_PAYLOAD: Final = act.PointsExpiryPayload
_ACCRUAL_PAYLOADS: Final[IdentityMemo[Contract]] = IdentityMemo()
_EXPIRY_PAYLOADS: Final[IdentityMemo[Contract]] = IdentityMemo()


def _payload(at: datetime, kind: DueKind) -> Contract:
    """The synthetic activity's payload (`due_at`), shared by the activities due at one date-time object
    (customers' batches fall due at the same local midnights): a frozen contract, so sharing it changes
    nothing."""
    accrual = kind == "DelayedAccrual"
    memo = _ACCRUAL_PAYLOADS if accrual else _EXPIRY_PAYLOADS
    payload = memo.get(at)
    if payload is None:
        payload = memo.put(at, trusted(_ACCRUAL_PAYLOAD if accrual else _EXPIRY_PAYLOAD, {"due_at": at}))
    return payload


def _fields(cls: type[Envelope]) -> dict[str, Any]:
    """A synthetic activity's fields (`contracts.field_template`) with the schema version set: a copy gets the
    customer's and the due time's."""
    fields = field_template(cls)
    fields["schema_version"] = SCHEMA_VERSION
    return fields


_ACCRUAL_FIELDS: Final = _fields(act.DelayedAccrual)
_EXPIRY_FIELDS: Final = _fields(act.PointsExpiry)


def _synthetic(state: CustomerState, at: datetime, kind: DueKind, event_id: str) -> Envelope:
    """`due_activity` for the engine's own use: its ids come from a validated state, so it is built without
    validation (the same model, field for field)."""
    accrual = kind == "DelayedAccrual"
    values = (_ACCRUAL_FIELDS if accrual else _EXPIRY_FIELDS).copy()
    values["event_id"] = event_id
    values["program_id"] = state.program_id
    values["customer_id"] = state.customer_id
    values["event_time"] = at
    values["payload"] = _payload(at, kind)
    return trusted(_ACCRUAL if accrual else _EXPIRY, values)


def _accrual_rules(fx: Effects, at: datetime, converted: list[tuple[Lot, Decimal]]) -> None:
    if not converted or not fx.known.accrual_rules:
        return
    state = fx.state
    synthetic = _synthetic(state, at, "DelayedAccrual", derive_id("da", state.program_id, state.customer_id, stamp(at)))
    assert isinstance(synthetic, _ACCRUAL)  # (the Final: `act.DelayedAccrual` is a module attribute lookup)
    points = ZERO  # summed in order from ZERO, as `sum(..., ZERO)` does
    lot_ids: list[str] = []
    bill: str | None = None  # the one bill number seen while there is one (the lots of a purchase share it)
    bills: set[str] | None = None  # every bill number, once a second one is seen
    for lot, amount in converted:
        points = points + amount
        lot_ids.append(lot.lot_id)
        bill_number = lot.bill_number
        if bill_number is not None and bill_number is not bill:
            if bills is not None:
                bills.add(bill_number)
            elif bill is None:
                bill = bill_number
            elif bill_number != bill:
                bills = {bill, bill_number}
    context = Conversion(activity=synthetic, due_at=at, points=points, lot_ids=tuple(lot_ids),
                         bill_numbers=(() if bill is None else (bill,)) if bills is None else tuple(sorted(bills)))
    with acting_as(fx, synthetic):
        rules.run_rule_sets(fx, "DelayedAccrual", context, ACCRUAL_HANDLERS)


def _remind(fx: Effects, dues: _ProgramDues, due: datetime, key: str, n: int, owner: Lot) -> None:
    """One notification per expiry group (lots expiring at the same instant) and offset: the REMIND transition
    (`due`, `key`, `n`) collected for `owner`."""
    state = fx.state
    expires_at = owner.expires_at
    assert expires_at is not None
    # Same expiry instant (aware datetimes compare as instants: the same test as equal UTC stamps); lots share
    # date-time objects, so identity settles most without a comparison.
    # Aware date-times equal as instants hash equal (the hash is kept in the object): different hashes settle
    # most other lots without a comparison.
    expires_hash = hash(expires_at)
    other: datetime | None = None  # the last expiry object found to be another instant (lots share them)
    group: list[Lot] = []
    for lot in state.lots:
        lot_expires = lot.expires_at
        if lot_expires is None or lot_expires is other:
            continue
        if lot_expires is not expires_at and (hash(lot_expires) != expires_hash or lot_expires != expires_at):
            other = lot_expires
            continue
        if lot.remaining > ZERO and _reminder_applies(lot, n, due):
            group.append(lot)
    if not group:
        return
    points = ZERO  # summed in order from ZERO, as `sum(..., ZERO)` does
    for lot in group:
        lot.reminded = (*lot.reminded, n)
        points = points + lot.remaining
    days = str(n)
    synthetic = _synthetic(state, due, "PointsExpiry", derive_id("rm", state.program_id, state.customer_id, key, days))
    expires_on = dues.expiry_days.get(expires_at)
    if expires_on is None:
        expires_on = dues.expiry_days.put(expires_at, expiry_date(expires_at, dues.zone).isoformat())
    with acting_as(fx, synthetic):
        fx.notify(dues.channel, dues.template, ("reminder", key, days),
                  {"points": _plain(points), "expires_on": expires_on, "days_before": days})


def _plain(points: Decimal) -> str:
    """`f"{points:f}"`: `str` where it writes no exponent (then the same text), in a seventh of the time."""
    text = str(points)
    return text if "E" not in text else f"{points:f}"


def materialise(fx: Effects, until: datetime) -> None:
    """Apply every conversion, reminder and expiry due at or before `until`, in due-time order: batch by batch
    (the transitions due at one instant, collected before the first applies), conversions first (then the
    DelayedAccrual rule sets, once for the batch), then reminders, then expiries (the order they sort in)."""
    dues = _program_dues(fx.program)
    pending, fixed_offsets = _collect(fx.state, dues, until, until is fx.time)
    start = 0
    for end in _batch_ends(pending, fixed_offsets):
        first = pending[start]
        converted: list[tuple[Lot, Decimal]] = []
        index = start
        while index < end:
            at, order, key, days_before, _, lot = pending[index]
            if order == CONVERT:
                # The first batch's conversions apply first of all (they sort first at their instant), each to
                # its own lot: the lot is as `_collect` saw it (promised, holding points). Later ones test again.
                if start == 0 or (lot.promised and lot.remaining > ZERO):
                    converted.append((lot, convert(fx, lot, at, scheduled=True)))
            else:
                if converted:
                    _accrual_rules(fx, first[0], converted)
                    converted = []
                if order == REMIND:
                    _remind(fx, dues, at, key, days_before, lot)
                elif lot.remaining > ZERO:
                    expire(fx, lot, at)
            index += 1
        if converted:
            _accrual_rules(fx, first[0], converted)
        start = end


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
