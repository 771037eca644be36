"""The outcome of applying one activity, and the accumulator handlers write it through.

Handlers never build ledger entries by hand: `Effects.credit/entry` assign the per-customer sequence number,
the stable id and the balances after, so every entry is consistent however it was produced.

Balances are running sums: `Effects` reads the customer's current and promised points from the lots once per
activity, and every change of a lot's remaining points or bucket goes through `take`, `give`, `settle_debt`,
`unpromise` or `credit`, which keep them in step in O(1). `CHECK_BALANCES` (set by the invariant tests)
re-derives them from the lots on every entry and fails loudly if they ever disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel

from loyalty_stream.engine.contracts import field_template, trusted
from loyalty_stream.engine.facts import Facts, facts
from loyalty_stream.engine.ids import derive_id, derive_id_of, hasher_of, id_after, id_of_text, joined
from loyalty_stream.engine.json_out import encode_contract
from loyalty_stream.engine.rounding import CENTS, exponent_of, power_of_ten
from loyalty_stream.engine.state import ZERO, CustomerState, Lot
from loyalty_stream.engine.times import fixed
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.events.outputs import (
    BalanceChange,
    Bucket,
    Channel,
    CouponIssued,
    LedgerEntry,
    LedgerKind,
    Notification,
    RedemptionResult,
    SourceRef,
    TierChange,
)
from loyalty_stream.program.model import Program

if TYPE_CHECKING:
    from loyalty_stream.engine.parking import GivenUp

CHECK_BALANCES = False
"""Debug switch: verify the running balances against the lots on every ledger entry (tests turn it on)."""

_LOCAL_DATE: Final = "local_date"

_ENTRY: Final = field_template(LedgerEntry)
_LEDGER_ENTRY: Final = LedgerEntry
"""`LedgerEntry` as a C global (by its name, a module-dict lookup per entry)."""
_BALANCE_CHANGE: Final = field_template(BalanceChange)
_BALANCE_CHANGE_TYPE: Final = BalanceChange

# Enum members as module constants: under mypyc `LedgerKind.EARN` is a module-dict lookup and then an attribute
# lookup through the Enum metaclass (about 900 instructions); a Final is a C global.
PROMISE: Final = LedgerKind.PROMISE
EARN: Final = LedgerKind.EARN
PROMISED: Final = Bucket.PROMISED
CURRENT: Final = Bucket.CURRENT
_CHANNELS: Final[dict[str, Channel]] = {channel.value: channel for channel in Channel}
"""`Channel(text)` without the Enum metaclass's interpreted `__call__`."""


def _entry_id(cause: str, kind: str, version: str, text: str | None) -> str:
    """A ledger entry's id, `derive_id_of("le", (cause, kind, version, *key))`, from `text = ids.joined(key)`
    (None for an empty key): no `(..., *key)` tuple (under mypyc a list built, extended, then copied). The text
    is one f-string of str-typed pieces (a `LedgerKind` is a str: its text as `str.join` takes it), which mypyc
    builds in one pass with no tuple and no `format` calls."""
    return id_of_text("le-", f"{cause}\x1f{kind}\x1f{version}" if text is None
                      else f"{cause}\x1f{kind}\x1f{version}\x1f{text}")


_same_quantum: Final = Decimal.same_quantum
"""Under mypyc, `value.same_quantum(x)` looks the method up by name per call; a Final is a C global (-15 %)."""


def _exponent(value: Decimal) -> int:
    """`exponent_of`, its most frequent case inline (points in cents)."""
    return -2 if _same_quantum(value, CENTS) else exponent_of(value)


FROM_LOT: Final[Any] = object()
"""Default of `Effects.entry`'s lot-derived details: take the lot's value."""


@dataclass(slots=True)
class Outcome:
    """Everything one activity produced. `state` is the customer's new state (the input object, updated)."""

    state: CustomerState
    ledger: list[LedgerEntry] = field(default_factory=list)
    balance_change: BalanceChange | None = None
    notifications: list[Notification] = field(default_factory=list)
    redemption_result: RedemptionResult | None = None
    tier_changes: list[TierChange] = field(default_factory=list)
    coupons: list[CouponIssued] = field(default_factory=list)
    duplicate: bool = False
    rejected: str | None = None
    """Set when the activity is invalid for the program (e.g. unknown event name): a dead-letter reason."""
    skipped: list[str] = field(default_factory=list)
    """Awards a valid activity did not get, with the reason (e.g. a string custom field where a prorated
    condition needs an integer, a cap already exhausted); the activity itself is processed normally."""
    parked: list[str] = field(default_factory=list)
    """Why the activity at hand waits for the purchase or redemption it names (it produced nothing else)."""
    given_up: list[GivenUp] = field(default_factory=list)
    """Parked activities (the one at hand included) that will not run, with the reason (`engine.parking`)."""

    def __init__(self, state: CustomerState, ledger: list[LedgerEntry] | None = None,
                 balance_change: BalanceChange | None = None, notifications: list[Notification] | None = None,
                 redemption_result: RedemptionResult | None = None, tier_changes: list[TierChange] | None = None,
                 coupons: list[CouponIssued] | None = None, duplicate: bool = False, rejected: str | None = None,
                 skipped: list[str] | None = None, parked: list[str] | None = None,
                 given_up: list[GivenUp] | None = None) -> None:
        # Written out: under mypyc an explicit __init__ is compiled, the dataclass-generated one runs interpreted.
        self.state = state
        self.ledger = [] if ledger is None else ledger
        self.balance_change = balance_change
        self.notifications = [] if notifications is None else notifications
        self.redemption_result = redemption_result
        self.tier_changes = [] if tier_changes is None else tier_changes
        self.coupons = [] if coupons is None else coupons
        self.duplicate = duplicate
        self.rejected = rejected
        self.skipped = [] if skipped is None else skipped
        self.parked = [] if parked is None else parked
        self.given_up = [] if given_up is None else given_up


class _Written:
    """The last ledger entry an `Effects` wrote: its values (what the next entry copies) and its fields that vary
    from entry to entry, as the objects it holds. Most entries of an activity repeat most of them (kind, bucket,
    bill, dates, source), so an entry sets only those whose object differs, not every one that is not None: a
    dict item set costs about 200 instructions, an identity test a few."""

    __slots__ = ("available_at", "balance_after", "bill_number", "bucket", "cause", "condition_code",
                 "desired_amount", "expires_at", "kind", "line_item_id", "occurred_at", "operator_id", "promised_after",
                 "reason", "redemption_id", "rule", "shortfall", "source", "source_type", "values")

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        """What the next entry copies: the last entry's values (first, `_ENTRY` with the customer's fields)."""
        # Its varying fields, None as in `_ENTRY`.
        self.kind: Any = None
        self.bucket: Any = None
        self.desired_amount: Any = None
        self.balance_after: Any = None
        self.promised_after: Any = None
        self.cause: Any = None
        self.source_type: Any = None
        self.source: Any = None
        self.occurred_at: Any = None
        self.condition_code: Any = None
        self.rule: Any = None
        self.line_item_id: Any = None
        self.bill_number: Any = None
        self.redemption_id: Any = None
        self.available_at: Any = None
        self.expires_at: Any = None
        self.reason: Any = None
        self.operator_id: Any = None
        self.shortfall: Any = None


class Effects:
    """Collects the outputs of one activity against one customer state."""

    __slots__ = ("activity", "any_rolling", "checking", "current_before", "event_id", "event_time",
                 "first_available", "first_expiry", "held", "held_promised", "known", "le_cause", "le_hasher",
                 "le_kind", "lifetime_before", "lot_cause", "lot_hasher", "memo", "memo_owner", "no_debt", "outcome",
                 "program", "promised_before", "scope", "source", "state", "time", "version", "version_text",
                 "written")

    def __init__(self, state: CustomerState, activity: Envelope, program: Program, source: SourceRef | None) -> None:
        self.state = state
        self.activity = activity
        self.event_id = activity.event_id
        """The activity's id and time as given (outputs carry them), read once (pydantic attribute reads)."""
        self.event_time = at = activity.event_time
        self.time = fixed(at)
        """The activity's time with the engine's shared fixed-offset zone (`engine.times`): the same instant
        and offset, for what the engine computes and keeps (lot times, comparisons with the lots' times: with
        the very same zone object a comparison needs no UTC offsets)."""
        self.program = program
        self.known: Facts = facts(program)
        """What the engine derived from the program (`engine.facts`), looked up once per activity."""
        self.version = version = program.version
        self.version_text = str(version)
        """The version as the ids write it (text keeps `derive_id` on its fast path)."""
        self.source = source
        self.outcome = Outcome(state=state)
        # One pass over the lots: the balances, and when the earliest transition could fall due.
        held = held_promised = ZERO
        first_available: datetime | None = None
        first_expiry: datetime | None = None
        # The last date-times found not earlier than the earliest so far: that stays so (the earliest only moves
        # earlier), and the lots credited by one activity share their date-time objects, mostly in a row.
        later_available: datetime | None = None
        later_expiry: datetime | None = None
        any_rolling = False
        for lot in state.lots:
            if lot.rolling:
                any_rolling = True
            remaining = lot.remaining
            if remaining is ZERO:
                # An emptied lot (`empty`) adds nothing to the sums: a total holds ZERO's term from the start (its
                # exponent, 0, and sign), so adding it again changes neither value nor exponent. Nor is it the
                # earliest of anything (it holds no points).
                continue
            # (The date-times are compared before the points: a date-time comparison with the shared zone is
            # the cheaper one, and most lots are not the earliest so far. A time object that is the earliest so
            # far is not earlier than itself.)
            # (`x = x + y`, not `x += y`: under mypyc the in-place form first looks for an in-place slot Decimal
            # lacks, about 30 instructions an add.)
            if lot.promised:
                held_promised = held_promised + remaining
                available_at = lot.available_at
                if available_at is not None and available_at is not first_available and (
                        available_at is not later_available):
                    if first_available is None or available_at < first_available:
                        if remaining > ZERO:
                            first_available = available_at
                    else:
                        later_available = available_at
            else:
                held = held + remaining
            expires_at = lot.expires_at
            if expires_at is not None and expires_at is not first_expiry and expires_at is not later_expiry:
                if first_expiry is None or expires_at < first_expiry:
                    if remaining > ZERO:
                        first_expiry = expires_at
                else:
                    later_expiry = expires_at
        self.first_available = first_available
        """The earliest conversion of a promised lot held when the activity started (None: none)."""
        self.first_expiry = first_expiry
        """The earliest expiry of a lot holding points when the activity started (None: none)."""
        self.any_rolling = any_rolling
        """Whether any lot has a rolling expiry (else rolling re-dating has nothing to visit)."""
        self.memo: dict[Any, Any] = {}
        """Values derived once per activity (expiry dates, due times), see `memo_for`."""
        self.memo_owner: Envelope = activity
        self.held = held
        """Remaining points of the current (not promised) lots: the balance before debt."""
        self.held_promised = held_promised
        """Remaining points of the promised lots: the promised balance."""
        debt = state.debt
        self.no_debt = debt if debt is ZERO or (not debt and str(debt) == "0") else None
        """The state's debt while it is the object read here and exactly `0` (no sign, no decimals): then the current
        balance is `held` itself (`held - 0` has held's value, sign and exponent, which is never above 0), one
        Decimal subtraction less per entry. A debt that changes is another object."""
        self.current_before = self.current
        self.promised_before = held_promised
        self.lifetime_before = state.lifetime_earned
        self.scope: Any = None
        """The rule set being run (engine.caps.SetScope) while its actions execute; None otherwise."""
        self.written: _Written | None = None
        """The last ledger entry written (made by the first), see `_Written`."""
        self.checking = CHECK_BALANCES
        """`CHECK_BALANCES` read once (under mypyc a module global is a dict lookup)."""
        self.le_cause = ""
        self.le_kind: str | None = None
        self.le_hasher: blake2b | None = None
        """The hasher over the text entry ids of `le_cause` and `le_kind` start with (`_le_id`; None: none yet)."""
        self.lot_cause = ""
        self.lot_hasher: blake2b | None = None
        """The hasher over the text ids of lots credited for `lot_cause` start with (`credit`; None: none yet)."""

    def act_for(self, activity: Envelope) -> tuple[Envelope, str, datetime, datetime]:
        """Run effects on behalf of `activity` from now on (`lifecycle.acting_as`, `parking.acting`): its id
        and times too (never assign `activity` alone). Returns what to `restore` afterwards."""
        before = self.activity, self.event_id, self.event_time, self.time
        self.activity = activity
        self.event_id = activity.event_id
        self.event_time = at = activity.event_time
        self.time = fixed(at)
        return before

    def restore(self, before: tuple[Envelope, str, datetime, datetime]) -> None:
        self.activity, self.event_id, self.event_time, self.time = before

    def local_date(self) -> date:
        """The activity's date in the program's time zone (once per activity: a zone conversion is costly)."""
        memo = self.memo_for()
        day: date | None = memo.get(_LOCAL_DATE)
        if day is None:
            day = memo[_LOCAL_DATE] = self.time.astimezone(self.known.zone).date()
        return day

    def memo_for(self) -> dict[Any, Any]:
        """A cache of values that depend only on the activity being run (its time, payload) and what the
        key names; emptied when effects run on behalf of another activity (`lifecycle.acting_as`)."""
        if self.memo_owner is not self.activity:
            self.memo = {}
            self.memo_owner = self.activity
        return self.memo

    # Balances ---------------------------------------------------------------------------------------------
    # The balances must come out exactly as summing the lots gives them, scale included ("0" for an empty
    # bucket, "0.00" once it holds a 0.00 lot): a Decimal sum has the finest exponent of its terms and 0's. Adding
    # to or taking from a running total keeps that exponent right by itself (a sum or difference is never coarser
    # than its terms); only a bucket losing a term can coarsen (a lot converting out of the promised bucket, a lot
    # emptied to 0 by expiry, a lot dropped), and only if that term had the total's exponent and no lot left in
    # the bucket has it (`_left`): then the total is re-scaled to the finest exponent left (`_rescale`).
    @property
    def current(self) -> Decimal:
        """The customer's current balance now (net of debt), without summing the lots."""
        debt = self.state.debt
        return self.held if debt is self.no_debt else self.held - debt

    @property
    def promised(self) -> Decimal:
        return self.held_promised

    def _left(self, promised: bool, old: Decimal) -> None:
        """A remainder `old` left the bucket (its lot converted, or holds 0 now): re-scale the bucket's total if
        `old` had its exponent and no lot of the bucket has it any more. The lots are looked at only in that case,
        and mostly the first one of the bucket has it (where counting every lot's exponent took them all)."""
        total = self.held_promised if promised else self.held
        if _same_quantum(old, total) and not self._keeps(promised, total, None):
            self._rescale(promised, None)

    def _keeps(self, promised: bool, total: Decimal, gone: set[int] | None) -> bool:
        """Whether a lot of the bucket (but those whose ids are in `gone`) has a remainder of `total`'s exponent."""
        for lot in self.state.lots:
            if lot.promised == promised and _same_quantum(lot.remaining, total) and (gone is None
                                                                                    or id(lot) not in gone):
                return True
        return False

    def _rescale(self, promised: bool, gone: set[int] | None) -> None:
        """Bring the bucket's running total to the finest exponent its lots (but `gone`) have (0 when empty)."""
        finest = 0
        for lot in self.state.lots:
            if lot.promised == promised and (gone is None or id(lot) not in gone):
                finest = min(finest, _exponent(lot.remaining))
        if promised:
            self.held_promised = self.held_promised.quantize(power_of_ten(finest))
        else:
            self.held = self.held.quantize(power_of_ten(finest))

    def take(self, lot: Lot, points: Decimal) -> None:
        """Remove `points` from what `lot` still holds (its bucket's balance goes down with it)."""
        lot.remaining -= points
        if lot.promised:
            self.held_promised -= points
        else:
            self.held -= points

    def give(self, lot: Lot, points: Decimal) -> None:
        """Put `points` back into `lot` (a reversal)."""
        lot.remaining += points
        if lot.promised:
            self.held_promised += points
        else:
            self.held += points

    def empty(self, lot: Lot) -> Decimal:
        """Take everything `lot` still holds (expiry); returns the points taken."""
        promised = lot.promised
        amount = lot.remaining
        lot.remaining = ZERO
        if promised:
            self.held_promised -= amount
        else:
            self.held -= amount
        self._left(promised, amount)
        return amount

    def unpromise(self, lot: Lot) -> Decimal:
        """Move a promised lot to the current bucket; returns the points that moved (the current bucket only
        gains a term, which cannot coarsen it)."""
        amount = lot.remaining
        if lot.promised:
            lot.promised = False
            self.held_promised -= amount
            self.held += amount
            self._left(True, amount)
        return amount

    def forget(self, lots: list[Lot]) -> None:
        """Lots holding nothing are being dropped from the state (retention, still in `state.lots`): their buckets
        may coarsen."""
        if not lots:
            return
        gone = {id(lot) for lot in lots}  # (lots are distinct objects; their ids need not be distinct)
        for promised in (False, True):
            total = self.held_promised if promised else self.held
            for lot in lots:
                if lot.promised == promised and _same_quantum(lot.remaining, total):
                    if not self._keeps(promised, total, gone):
                        self._rescale(promised, gone)
                    break

    def check_balances(self) -> None:
        """The running balances equal the lots' sums, scale included (`CHECK_BALANCES`, in tests)."""
        state = self.state
        if (str(self.current), str(self.held_promised)) != (str(state.current), str(state.promised)):
            raise AssertionError(f"running balances {self.current}/{self.held_promised} disagree with the lots "
                                 f"{state.current}/{state.promised} of customer {state.customer_id}")

    # Arithmetic ---------------------------------------------------------------------------------------
    def round(self, value: Decimal) -> Decimal:
        """`round_points` with the program's rounding."""
        return self.known.rounder.round(value)

    @property
    def at(self) -> datetime:
        """The activity's time as given (see `time` for computations)."""
        return self.event_time

    # Ledger ---------------------------------------------------------------------------------------------
    def entry(
        self,
        *,
        kind: LedgerKind,
        bucket: Bucket,
        amount: Decimal,
        key: tuple[object, ...],
        at: datetime | None = None,
        scheduled: bool = False,
        lot: Lot | None = None,
        lot_id: str | None = None,
        condition_code: Any = FROM_LOT,
        line_item_id: Any = FROM_LOT,
        bill_number: Any = FROM_LOT,
        desired_amount: Decimal | None = None,
        rule: str | None = None,
        redemption_id: str | None = None,
        reason: str | None = None,
        operator_id: str | None = None,
        shortfall: Decimal | None = None,
        source_type: str | None = None,
    ) -> LedgerEntry:
        """Append a ledger entry for a change already applied to the state.

        `key` identifies the entry within its cause; scheduled entries (conversion, expiry) are keyed by the lot
        alone and carry no source offset, so the scheduler path and the lazy path produce identical entries.
        `condition_code`, `line_item_id` and `bill_number` default to the lot's (None without a lot);
        `lot_id` is only for entries without a lot.
        """
        return self._record(kind, bucket, amount, key, at, scheduled, lot, lot_id, condition_code, line_item_id,
                            bill_number, desired_amount, rule, redemption_id, reason, operator_id, shortfall,
                            source_type, None)

    def _le_id(self, cause: str, kind: str, tail: bytes) -> str:
        """`_entry_id(cause, kind, version, text)` for `tail = text.encode()`: the text before `text` hashed once for
        the entries with the same cause and kind in a row, where building each entry's text cost about as much as its
        hash's overhead (`ids.id_after`). Causes compared as text (equal ones are mostly the same object, a pointer
        test; lots decoded from storage hold their own copies), kinds as the enum members they are."""
        hasher = self.le_hasher
        if hasher is None or cause != self.le_cause or kind is not self.le_kind:
            hasher = self.le_hasher = hasher_of(f"{cause}\x1f{kind}\x1f{self.version_text}\x1f")
            self.le_cause = cause
            self.le_kind = kind
        return id_after("le-", hasher, tail)

    def _record(self, kind: LedgerKind, bucket: Bucket, amount: Decimal, key: tuple[object, ...],
                at: datetime | None, scheduled: bool, lot: Lot | None, lot_id: str | None, condition_code: Any,
                line_item_id: Any, bill_number: Any, desired_amount: Decimal | None, rule: str | None,
                redemption_id: str | None, reason: str | None, operator_id: str | None, shortfall: Decimal | None,
                source_type: str | None, entry_id: str | None) -> LedgerEntry:
        """`entry`, positional, with the entry's id when the caller has it (`credit`: see there)."""
        state = self.state
        state.seq += 1
        if self.checking:
            self.check_balances()
        activity = self.activity
        if lot is not None:
            if lot_id is not None:
                raise TypeError("lot_id is taken from the lot")
            lot_id = lot.lot_id
            cause = lot.source_event_id if scheduled else self.event_id
            if condition_code is FROM_LOT:
                condition_code = lot.condition_code
            if line_item_id is FROM_LOT:
                line_item_id = lot.line_item_id
            if bill_number is FROM_LOT:
                bill_number = lot.bill_number
            available_at, expires_at = lot.available_at, lot.expires_at
        else:
            cause = self.event_id
            if condition_code is FROM_LOT:
                condition_code = None
            if line_item_id is FROM_LOT:
                line_item_id = None
            if bill_number is FROM_LOT:
                bill_number = None
            available_at = expires_at = None
        # The fields in declaration order: a copy of a full dict (the last entry's values, `_Written`), cheaper
        # than a literal this long (CPython builds it as two dicts and merges them), with the fields that differ set.
        written = self.written
        if written is None:
            base = _ENTRY.copy()
            base["customer_id"] = state.customer_id
            base["program_id"] = state.program_id
            base["program_version"] = self.version
            written = self.written = _Written(base)
        values = written.values.copy()
        if entry_id is None:
            # (Scheduled entries too: lots credited together convert and expire together, in a row, with their cause.)
            entry_id = (self._le_id(cause, kind, joined(key).encode()) if key
                        else _entry_id(cause, kind, self.version_text, None))
        values["entry_id"] = entry_id
        values["seq"] = state.seq
        values["amount"] = amount
        balance_after, promised_after = self.current, self.held_promised
        if balance_after is not written.balance_after:  # (the same object while the bucket does not move)
            values["balance_after"] = written.balance_after = balance_after
        if promised_after is not written.promised_after:
            values["promised_after"] = written.promised_after = promised_after
        values["lot_id"] = lot_id
        # The source fields: a scheduled entry has the lot's cause and no source; `act_for` and `parking.acting`
        # change the activity and source entries are made for.
        source_type = source_type or type(activity).__name__
        source = None if scheduled else self.source
        occurred_at = self.event_time if at is None else at
        if kind is not written.kind:
            values["kind"] = written.kind = kind
        if bucket is not written.bucket:
            values["bucket"] = written.bucket = bucket
        if desired_amount is not written.desired_amount:
            values["desired_amount"] = written.desired_amount = desired_amount
        if cause is not written.cause:
            values["source_event_id"] = written.cause = cause
        if source_type is not written.source_type:
            values["source_type"] = written.source_type = source_type
        if source is not written.source:
            values["source"] = written.source = source
        if condition_code is not written.condition_code:
            values["condition_code"] = written.condition_code = condition_code
        if rule is not written.rule:
            values["rule"] = written.rule = rule
        if line_item_id is not written.line_item_id:
            values["line_item_id"] = written.line_item_id = line_item_id
        if bill_number is not written.bill_number:
            values["bill_number"] = written.bill_number = bill_number
        if redemption_id is not written.redemption_id:
            values["redemption_id"] = written.redemption_id = redemption_id
        if available_at is not written.available_at:
            values["available_at"] = written.available_at = available_at
        if expires_at is not written.expires_at:
            values["expires_at"] = written.expires_at = expires_at
        if occurred_at is not written.occurred_at:
            values["occurred_at"] = written.occurred_at = occurred_at
        if reason is not written.reason:
            values["reason"] = written.reason = reason
        if operator_id is not written.operator_id:
            values["operator_id"] = written.operator_id = operator_id
        if shortfall is not written.shortfall:
            values["shortfall"] = written.shortfall = shortfall
        written.values = values
        entry = trusted(_LEDGER_ENTRY, values)
        self.outcome.ledger.append(entry)
        return entry

    def credit(
        self,
        *,
        points: Decimal,
        key: tuple[object, ...],
        promised: bool = False,
        available_at: datetime | None = None,
        expires_at: datetime | None = None,
        origin: str = "earn",
        condition_code: str | None = None,
        rule: str | None = None,
        bill_number: str | None = None,
        line_item_id: str | None = None,
        expiry_code: str | None = None,
        rolling: bool = False,
        desired_amount: Decimal | None = None,
        kind: LedgerKind | None = None,
        reason: str | None = None,
        operator_id: str | None = None,
        counts_as_earned: bool = True,
        redemption_id: str | None = None,
    ) -> Lot:
        """Create a lot of `points` (already rounded) and its ledger entry; pays off debt first."""
        # The lot's and the entry's ids, `derive_id_of("lot", (event_id, *key))` and `derive_id_of("le", (event_id,
        # kind, version, *key))`, from the key joined once (`ids.id_of_text`): no `(..., *key)` tuples to build.
        # Both ids' texts end with the key's: it is encoded once and hashed after a hasher over each's head
        # (`ids.id_after`), the lots' head (the activity's id) hashed once per activity.
        event_id = self.event_id
        if key:
            data = joined(key).encode()
            lot_hasher = self.lot_hasher
            if lot_hasher is None or event_id != self.lot_cause:
                lot_hasher = self.lot_hasher = hasher_of(f"{event_id}\x1f")
                self.lot_cause = event_id
            lot_id = id_after("lot-", lot_hasher, data)
            tail: bytes | None = data
        else:
            tail = None
            lot_id = id_of_text("lot-", event_id)
        lot = Lot(lot_id, points, points, promised, self.time, available_at, expires_at, event_id, origin,
                  condition_code, bill_number, line_item_id, expiry_code, rolling)
        if rolling:
            self.any_rolling = True
        state = self.state
        state.lots.append(lot)
        if counts_as_earned:
            state.lifetime_earned = state.lifetime_earned + points  # (not `+=`: see `__init__`)
        if promised:
            self.held_promised = self.held_promised + points
            bucket = PROMISED
            kind = kind or PROMISE
        else:
            self.held = self.held + points
            if state.debt is not self.no_debt:
                self.settle_debt(lot)
            bucket = CURRENT
            kind = kind or EARN
        entry_id = _entry_id(event_id, kind, self.version_text, None) if tail is None else self._le_id(event_id, kind,
                                                                                                        tail)
        self._record(kind, bucket, points, key, None, False, lot, None, FROM_LOT, FROM_LOT, FROM_LOT, desired_amount,
                     rule, redemption_id, reason, operator_id, None, None, entry_id)
        return lot

    def settle_debt(self, lot: Lot) -> None:
        """A negative balance (debt) is paid from the next current points."""
        state = self.state
        debt = state.debt
        if debt is not self.no_debt and debt > ZERO and lot.remaining > ZERO:
            paid = min(state.debt, lot.remaining)
            self.take(lot, paid)
            state.debt -= paid

    # Other outputs ----------------------------------------------------------------------------------------
    def notify(self, channel: Channel | str, template: str, key: tuple[object, ...], data: dict[str, str]) -> None:
        """`data` is a dict the notification keeps (not `**data`: under mypyc a `**` call is a generic one)."""
        known = channel if type(channel) is Channel else _CHANNELS.get(channel)
        self.outcome.notifications.append(trusted(Notification, {
            "type": "Notification",
            "notification_id": derive_id_of("nt", (self.event_id, template, *key)),
            "customer_id": self.state.customer_id,
            "program_id": self.state.program_id,
            "channel": Channel(channel) if known is None else known,
            "template": template,
            "data": data,
            "cause_event_id": self.event_id,
            "occurred_at": self.event_time,
        }))

    def coupon(self, series: str, rule: str | None, key: tuple[object, ...] = ()) -> None:
        """`key` tells apart coupons of one series from rules of the same name in different sets."""
        self.outcome.coupons.append(trusted(CouponIssued, {
            "type": "CouponIssued",
            "coupon_id": derive_id_of("cp", (self.event_id, series, rule, *key)),
            "customer_id": self.state.customer_id,
            "program_id": self.state.program_id,
            "series": series,
            "rule": rule,
            "cause_event_id": self.event_id,
            "occurred_at": self.event_time,
        }))

    def change_tier(self, to_tier: str, reason: str) -> None:
        state = self.state
        if state.tier == to_tier:
            return
        change = trusted(TierChange, {
            "type": "TierChange",
            "change_id": derive_id("tc", self.event_id, to_tier),
            "customer_id": state.customer_id,
            "program_id": state.program_id,
            "from_tier": state.tier,
            "to_tier": to_tier,
            "reason": reason,
            "cause_event_id": self.event_id,
            "occurred_at": self.event_time,
        })
        state.tier = to_tier
        self.outcome.tier_changes.append(change)
        policy = self.program.tier_policy
        if policy.notify_channel and policy.notify_template:
            self.notify(policy.notify_channel, policy.notify_template, ("tier", to_tier), {"tier": to_tier})

    def finish(self) -> Outcome:
        """Attach the balance change when anything moved."""
        state = self.state
        if self.checking:
            self.check_balances()
        current, promised = self.current, self.held_promised
        if (
            self.outcome.ledger
            or current != self.current_before
            or promised != self.promised_before
            or self.outcome.tier_changes
        ):
            values = _BALANCE_CHANGE.copy()  # (as in `entry`)
            values["change_id"] = id_of_text("bc-", self.event_id)  # derive_id("bc", event_id), no tuple
            values["customer_id"] = state.customer_id
            values["program_id"] = state.program_id
            values["seq"] = state.seq
            values["current"] = current
            values["promised"] = promised
            values["lifetime_earned"] = state.lifetime_earned
            values["redeemed"] = state.redeemed
            values["expired"] = state.expired
            values["returned"] = state.returned
            values["delta_current"] = current - self.current_before
            values["delta_promised"] = promised - self.promised_before
            values["tier"] = state.tier
            values["cause_event_id"] = self.event_id
            values["cause_type"] = type(self.activity).__name__
            values["occurred_at"] = self.event_time
            self.outcome.balance_change = trusted(_BALANCE_CHANGE_TYPE, values)
        return self.outcome


def encode_outputs(outcome: Outcome, topics: tuple[str, str, str, str, str, str],
                   into: list[tuple[str, bytes]]) -> None:
    """Append each output of `outcome` as (its topic, `events.codec.encode(output)`): its ledger entries, balance
    change, notifications, redemption result, tier changes and coupons, with `topics` in that order. Compiled: the
    stream processor's loops over them, interpreted, cost about 2,000 instructions per output."""
    _encode_all(outcome.ledger, topics[0], into)
    change = outcome.balance_change
    if change is not None:
        into.append((topics[1], encode_contract(change)))
    _encode_all(outcome.notifications, topics[2], into)
    result = outcome.redemption_result
    if result is not None:
        into.append((topics[3], encode_contract(result)))
    _encode_all(outcome.tier_changes, topics[4], into)
    _encode_all(outcome.coupons, topics[5], into)


def encode_ledger(outcome: Outcome, topic: str, into: list[tuple[str, bytes]]) -> None:
    """`encode_outputs` of the ledger entries alone: an offline replay keeps nothing else."""
    _encode_all(outcome.ledger, topic, into)


def _encode_all(outputs: Sequence[BaseModel], topic: str, into: list[tuple[str, bytes]]) -> None:
    for output in outputs:
        into.append((topic, encode_contract(output)))
