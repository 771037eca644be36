"""Per-customer caps of a rule set, counted in event time.

Counters live in `CustomerState.counters` under keys that name the activity, the set, what is counted and
the period (`cap:TransactionAdd:fuel:points:calendar_month:2024-10-01`), so a late event counts against the
period it happened in and a return releases the period the points were counted in.

Retention: a periodic counter is dropped once its period ended more than RETENTION_DAYS before the event
being processed, which bounds the state. A late event for a period that old can no longer be checked, so a
capped set awards nothing for it (recorded in `Outcome.skipped`): a cap is never exceeded, even by replays
of very old activity.

Each lot records the counters it used in `Lot.cap_keys`:

* `"<key>"` for a points counter (total points): the lot counted its own points;
* `"<key>=<amount>"` for an amount counter (tender amounts, tracker units): the lot's share of the amount
  the set counted for that transaction (shares over the set's lots add up exactly to what was counted).

`release_caps(state, lot, points)` gives back the part of those counts that `points` of the lot stand for;
the returns module calls it when it claws points back.

A set's scope (`SetScope`) lives while the fired rule's actions run: points caps are charged as each action
awards; tender and tracker usage is charged once per transaction and set, when the set awarded any points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from loyalty_stream.engine import periods
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.facts import SetFacts
from loyalty_stream.engine.line_items import ONE, Unit, distribute, item_rows_of, quantum_of, tender_amounts
from loyalty_stream.engine.rounding import normalize
from loyalty_stream.engine.state import ZERO, CustomerState, Lot
from loyalty_stream.events.activities import TransactionAdd, TransactionPayload
from loyalty_stream.program.expressions import field_value
from loyalty_stream.program.rules import Caps, CompiledRuleSet, Period

RETENTION_DAYS: Final = 400
"""How long after its period ended a counter is kept (a calendar year plus room for late events)."""
_RETENTION: Final = timedelta(days=RETENTION_DAYS)  # (a keyword call to timedelta is a generic, parsed call)
_RECENT: Final = timedelta(days=RETENTION_DAYS - 2)
"""An activity at most this long before the newest event cannot meet a dropped counter of its own period
(see `current_too_old`)."""
_NOW_HORIZON: Final = "cap_horizon"
_AT_HORIZON: Final = "cap_horizon_at"


def counter_key(activity: str, set_name: str, what: str, period_label: str) -> str:
    return f"cap:{activity}:{set_name}:{what}:{period_label}"


_ENDS: Final[dict[str, date | None]] = {}
"""`period_end` by key: a plain dict (mypyc looks it up in C; an `lru_cache` is a generic call), emptied when
it grows past a bound."""


def period_end(key: str) -> date | None:
    """The local date after the last day of the key's period; None for lifetime (or a foreign key)."""
    if key in _ENDS:
        return _ENDS[key]
    if len(_ENDS) >= 4096:
        _ENDS.clear()
    end = _ENDS[key] = _period_end(key)
    return end


def _period_end(key: str) -> date | None:
    parts = key.rsplit(":", 2)
    if len(parts) < 3:
        return None
    period = parts[1]
    try:
        start = date.fromisoformat(parts[2])
    except ValueError:
        return None
    if period == "day":
        return start + timedelta(days=1)
    if period == "calendar_week":
        return start + timedelta(days=7)
    if period == "calendar_month":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    if period == "calendar_year":
        return start.replace(year=start.year + 1)
    return None


def too_old(key: str, newest: datetime | None, fx: Effects) -> bool:
    """Has this period's counter possibly been dropped already (ended > RETENTION before the newest event)?"""
    end = period_end(key)
    if end is None or newest is None:
        return False
    return end < _horizon(fx, newest)


def current_too_old(fx: Effects, key: str) -> bool:
    """`too_old(key, newest event time, fx)` for a counter of the period holding the activity's own local date.

    Such a period ends after that date, so it can only be too old when the activity lies more than
    `_RECENT` before the newest event (a zone's offset moves a local date by at most a day): the usual case
    is settled by one comparison of instants, without the horizon."""
    newest = fx.state.last_event_time
    if newest is None or fx.time >= newest - _RECENT:
        return False
    return too_old(key, newest, fx)


def _horizon(fx: Effects, at: datetime) -> date:
    """The local date RETENTION_DAYS before `at` (once per activity and instant). Kept under text keys and
    found by identity: a tuple key with an aware date-time hashes it through its zone's offset."""
    memo = fx.memo_for()
    if at is fx.time:
        now: date | None = memo.get(_NOW_HORIZON)
        if now is None:
            now = memo[_NOW_HORIZON] = fx.local_date() - _RETENTION
        return now
    known: tuple[datetime, date] | None = memo.get(_AT_HORIZON)
    if known is not None and known[0] is at:
        return known[1]
    horizon = at.astimezone(fx.known.zone).date() - _RETENTION
    memo[_AT_HORIZON] = (at, horizon)
    return horizon


def period_label(fx: Effects, period: Period) -> str:
    """`periods.period_key` of the activity's time (`periods.period_label` remembers it)."""
    return periods.period_label(fx.local_date(), period)


def _prune(fx: Effects, key: str) -> None:
    """When a new period's counter opens, drop counters whose period ended more than RETENTION ago."""
    counters = fx.state.counters
    if not counters or key in counters or key.endswith(":lifetime"):
        return
    horizon = _horizon(fx, fx.time)
    # One pass; the rare key to drop is then checked for the prefix and collected (deleted after the pass).
    dropped: list[str] | None = None
    for old in counters:
        end = period_end(old)
        if end is not None and end < horizon and old.startswith("cap:"):
            if dropped is None:
                dropped = []
            dropped.append(old)
    if dropped is not None:
        for old in dropped:
            del counters[old]


def charge(fx: Effects, key: str, amount: Decimal) -> None:
    if amount <= ZERO:
        return
    _prune(fx, key)
    fx.state.counters[key] = fx.state.counters.get(key, ZERO) + amount


def release_caps(state: CustomerState, lot: Lot, points: Decimal) -> None:
    """Give back the cap usage `points` of `lot` stand for (a return claws them back)."""
    if points <= ZERO or lot.points <= ZERO or not lot.cap_keys:
        return
    share = min(ONE, points / lot.points)
    for entry in lot.cap_keys:
        key, sep, amount = entry.partition("=")
        release = Decimal(amount) * share if sep else min(points, lot.points)
        used = state.counters.get(key)
        if used is None:
            continue  # the period's counter was pruned: it no longer limits anything
        left = used - release
        if left > ZERO:
            state.counters[key] = left
        else:
            del state.counters[key]


@dataclass(slots=True)
class AmountCap:
    """Usage of an amount counter (tender or tracker) computed for one transaction and set."""

    key: str
    counted: Decimal
    factors: dict[str | None, Decimal]
    """Per line item id (None: the bill as a whole): the share of its amount still allowed to earn."""
    notes: list[str] = field(default_factory=list)
    modes: frozenset[str] = frozenset()
    """Tender caps: the capped payment modes, and the part of their payment over the allowance."""
    excess: Decimal = ZERO

    def __init__(self, key: str, counted: Decimal, factors: dict[str | None, Decimal], notes: list[str] | None = None,
                 modes: frozenset[str] = frozenset(), excess: Decimal = ZERO) -> None:
        # Written out: under mypyc an explicit __init__ is compiled, the dataclass-generated one runs interpreted.
        self.key = key
        self.counted = counted
        self.factors = factors
        self.notes = [] if notes is None else notes
        self.modes = modes
        self.excess = excess

    def for_modes(self, payload: TransactionPayload, eligible: Sequence[str] | None) -> Decimal:
        """Tender cap factor for an action that earns only on `eligible` modes (tender unroller).

        The excess is taken from the capped modes' payment; an unroller that keeps only part of that
        payment bears that part of the excess, on the part of the bill it earns on.
        """
        if eligible is None or self.excess <= ZERO:
            return self.factors[None]
        paid = tender_amounts(payload, eligible)
        base = min(paid, payload.amount)
        capped_paid = tender_amounts(payload, tuple(self.modes))
        if base <= ZERO or capped_paid <= ZERO:
            return ONE
        mine = tender_amounts(payload, [m for m in eligible if m in self.modes])
        excess = self.excess * mine / capped_paid
        return max(ZERO, min(ONE, (base - excess) / base))


@dataclass(slots=True)
class SetScope:
    """One rule set's run for one activity (or one tier change): caps and the lots it produced."""

    compiled: CompiledRuleSet
    activity: Any
    key_prefix: tuple[object, ...]
    """Ids of this scope's outputs start with it (the activity, and for TierChange the new tier)."""
    info: SetFacts
    """The set's facts (`facts.SetRun.facts`; made on the spot for a scope built without them)."""
    lots: list[Lot] = field(default_factory=list)
    awarded: Decimal = ZERO
    _tender: AmountCap | None = None
    _tracker: AmountCap | None = None
    _points_key: str | None = None
    _points_exhausted: bool = False
    _amount_caps: list[AmountCap] | None = None
    key_head: tuple[object, ...] = ()
    """`key_prefix` and the set's name: where the keys of the set's outputs start (read once per scope)."""

    def __init__(self, compiled: CompiledRuleSet, activity: Any, key_prefix: tuple[object, ...],
                 lots: list[Lot] | None = None, awarded: Decimal = ZERO, _tender: AmountCap | None = None,
                 _tracker: AmountCap | None = None, _points_key: str | None = None, _points_exhausted: bool = False,
                 _amount_caps: list[AmountCap] | None = None, info: SetFacts | None = None,
                 key_head: tuple[object, ...] | None = None) -> None:
        # Written out: under mypyc an explicit __init__ is compiled, the dataclass-generated one runs interpreted.
        # `info` and `key_head` come from the runner's `facts.SetRun` (read once per program).
        self.compiled = compiled
        self.activity = activity
        self.key_prefix = key_prefix
        self.lots = [] if lots is None else lots
        self.awarded = awarded
        self._tender = _tender
        self._tracker = _tracker
        self._points_key = _points_key
        self._points_exhausted = _points_exhausted
        self._amount_caps = _amount_caps
        self.info = info = SetFacts(compiled) if info is None or info.compiled is not compiled else info
        self.key_head = (*key_prefix, info.name) if key_head is None else key_head

    @property
    def caps(self) -> Caps:
        return self.compiled.caps

    @property
    def name(self) -> str:
        return self.compiled.name

    # Points ------------------------------------------------------------------------------------------
    def points_key(self, fx: Effects) -> str | None:
        """The total-points counter of this event's period (computed once per scope)."""
        if self._points_key is None:
            info = self.info
            if info.total_points is None:
                return None
            self._points_key = _key_for(fx, info.points_keys, info, "points", info.points_period)
            self._points_exhausted = current_too_old(fx, self._points_key)
        return self._points_key

    def points_room(self, fx: Effects) -> Decimal | None:
        """Points the set may still award in the current period; None when uncapped."""
        total = self.info.total_points
        if total is None:
            return None
        key = self.points_key(fx)
        assert key is not None
        if self._points_exhausted:
            return ZERO
        return max(ZERO, total - fx.state.counters.get(key, ZERO))

    # Amount caps (TransactionAdd) ------------------------------------------------------------------------
    def amount_caps(self, fx: Effects) -> list[AmountCap]:
        """The tender and tracker usage of this transaction (computed once per scope)."""
        known = self._amount_caps
        if known is not None:
            return known
        activity = self.activity
        info = self.info
        if not info.amount_capped or not isinstance(activity, TransactionAdd):
            self._amount_caps = []
            return []
        if info.has_tender and self._tender is None:
            self._tender = _tender(fx, self, activity, info)
        if info.has_tracker and self._tracker is None:
            self._tracker = _tracker(fx, self, activity, info)
        known = self._amount_caps = [c for c in (self._tender, self._tracker) if c is not None]
        return known

    def factor(self, fx: Effects, unit: Unit, tender_modes: Sequence[str] | None = None) -> Decimal:
        """The share of `unit`'s amount the tender and tracker caps still let earn (for an action earning on
        `tender_modes` only, when it has a tender unroller)."""
        result = ONE
        amount_caps = self._amount_caps
        if amount_caps is None:
            amount_caps = self.amount_caps(fx)
        for cap in amount_caps:
            if cap is self._tender and isinstance(self.activity, TransactionAdd):
                result *= cap.for_modes(self.activity.payload, tender_modes)
            else:
                result *= cap.factors.get(unit.item_id, cap.factors.get(None, ONE))
        return result

    # Bookkeeping -------------------------------------------------------------------------------------
    def charge_points(self, fx: Effects, awarded: Decimal, lots: list[Lot]) -> None:
        self.awarded += awarded
        self.lots.extend(lots)
        key = self.points_key(fx)
        if key is None or awarded <= ZERO:
            return
        charge(fx, key, awarded)
        for lot in lots:
            lot.cap_keys = (*lot.cap_keys, key)

    def close(self, fx: Effects) -> None:
        """Charge tender/tracker usage once, if the set awarded points, and spread it over its lots."""
        if self._tender is None and self._tracker is None:
            return  # (most sets: no amount cap)
        for cap in (self._tender, self._tracker):
            if cap is None:
                continue
            fx.outcome.skipped.extend(cap.notes)
            if cap.counted <= ZERO or self.awarded <= ZERO:
                continue
            counted = cap.counted
            charge(fx, cap.key, counted)
            lots = [lot for lot in self.lots if lot.points > ZERO]
            # One lot takes the whole count: `distribute` would give it `counted` at a finer scale, and the
            # entry is written normalized (the same text for the same value).
            shares = [counted] if len(lots) == 1 else distribute(counted, [lot.points for lot in lots],
                                                                 quantum_of(counted))
            # Indexed: `zip(..., strict=True)` is a keyword call to a builtin type, a generic parsed call.
            for position in range(len(lots)):
                lot, share = lots[position], shares[position]
                if share > ZERO:
                    lot.cap_keys = (*lot.cap_keys, f"{cap.key}={normalize(share)}")


def _key_for(fx: Effects, keys: dict[date, str], info: SetFacts, what: str, period: Period) -> str:
    """`counter_key` of the set's `what` counter for the period holding the activity's local date, kept in
    `keys` (one of `info`'s per-date key dicts, emptied when it grows past a bound)."""
    day = fx.local_date()
    key = keys.get(day)
    if key is None:
        if len(keys) >= 1024:
            keys.clear()
        key = keys[day] = counter_key(info.activity, info.name, what, periods.period_label(day, period))
    return key


def _room(fx: Effects, key: str, limit: Decimal) -> Decimal:
    if current_too_old(fx, key):
        return ZERO
    return max(ZERO, limit - fx.state.counters.get(key, ZERO))


def _tender(fx: Effects, scope: SetScope, activity: TransactionAdd, info: SetFacts) -> AmountCap:
    """Only the first `limit` paid with the capped modes earns: the excess is taken off the bill pro rata.
    (`info` holds the set's tender cap as read once per program; the bill's fields are read once.)"""
    payload = activity.payload
    amount = payload.amount
    key = _key_for(fx, info.tender_keys, info, info.tender_what, info.tender_period)
    paid = tender_amounts(payload, info.tender_modes)
    room = _room(fx, key, info.tender_limit)
    counted = min(paid, room)
    excess = min(paid - counted, amount)
    factor = ONE if amount <= ZERO else (amount - excess) / amount
    return AmountCap(key, counted, {None: factor}, modes=info.tender_mode_set, excess=excess)


def _tracker(fx: Effects, scope: SetScope, activity: TransactionAdd, info: SetFacts) -> AmountCap:
    """Line items carrying the tracked field earn only for the units still allowed, in bill order (`info`: the
    set's tracker cap as read once per program)."""
    payload = activity.payload
    key = _key_for(fx, info.tracker_keys, info, info.tracker_what, info.tracker_period)
    room = _room(fx, key, info.tracker_limit)
    factors: dict[str | None, Decimal] = {}
    notes: list[str] = []
    counted = ZERO
    weighted = ZERO
    items_total = ZERO  # (summed in the loop, in the same order: each item's attributes are read once)
    # While every factor is ONE, `weighted` is `items_total` (the same additions): their quotient is 1.
    whole = True
    tracked = info.tracker_field
    for row in item_rows_of(fx, payload):
        item_id, amount, item = row[0], row[1], row[2]
        items_total += amount
        raw = item.custom_fields.get(tracked)
        if raw is None:
            factors[item_id] = ONE
            weighted += amount
            continue
        value = field_value(raw)
        if not isinstance(value, Decimal) or value < ZERO:
            factors[item_id] = ZERO
            whole = False
            notes.append(f"{scope.compiled.where}.caps.tracker: line item {item_id} field {tracked!r} "
                         f"is {raw!r}, not a quantity; the item earns nothing in this set")
            continue
        allowed = min(value, room - counted)
        counted += allowed
        if allowed is value or value == ZERO:
            # x / x is exactly 1 (exponent 0, ONE's); amount * ONE is amount (exponent included).
            factors[item_id] = ONE
            weighted += amount
            continue
        factor = factors[item_id] = allowed / value
        weighted += amount * factor
        whole = False
    if items_total > ZERO:
        factors[None] = ONE if whole else weighted / items_total
    return AmountCap(key, counted, factors, notes)
