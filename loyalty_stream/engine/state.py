"""Customer state: points live in lots, balances are derived from them.

A lot is one credit (amount, source event, line item, earned/available/expiry dates). Redemptions consume lots
and remember which, so expiry never takes the same points twice and reversals restore the original expiry.
The state is plain slotted dataclasses with an explicit, orjson-friendly codec: it is what the Faust table
stores, so it must be small, fast to (de)serialise and free of framework types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final, TypeVar, overload

import orjson

from loyalty_stream.engine.times import IdentityMemo, TextMemo, fixed
from loyalty_stream.events.activities import activity_adapter
from loyalty_stream.events.codec import encode
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.events.outputs import SourceRef

ZERO: Final = Decimal(0)

RECENT_EVENT_IDS: Final = 512
"""How many recent event ids a customer remembers to drop duplicate publishes (offsets catch redelivery)."""


@dataclass(slots=True)
class Lot:
    lot_id: str
    points: Decimal
    remaining: Decimal
    promised: bool
    earned_at: datetime
    available_at: datetime | None
    expires_at: datetime | None
    source_event_id: str
    origin: str = "earn"  # earn | adjust | reverse | reissue | event
    condition_code: str | None = None
    bill_number: str | None = None
    line_item_id: str | None = None
    expiry_code: str | None = None
    rolling: bool = False
    reminded: tuple[int, ...] = ()
    """Reminder offsets (days before expiry) already notified for this lot."""
    cap_keys: tuple[str, ...] = ()
    """Cap counters this lot's points were counted against, so a return can release them."""
    shortfall: Decimal = ZERO
    """Points returns claimed from this lot after they had been redeemed (forgiven, or charged to the
    balance), so a later reversal of that redemption neither charges nor hands them back twice."""
    stored: LotMemo | None = field(default=None, compare=False, repr=False)
    """The codec's memo (`LotMemo`): the stored row and every field's value when stored."""

    def __init__(self, lot_id: str, points: Decimal, remaining: Decimal, promised: bool, earned_at: datetime,
                 available_at: datetime | None, expires_at: datetime | None, source_event_id: str,
                 origin: str = "earn", condition_code: str | None = None, bill_number: str | None = None,
                 line_item_id: str | None = None, expiry_code: str | None = None, rolling: bool = False,
                 reminded: tuple[int, ...] = (), cap_keys: tuple[str, ...] = (), shortfall: Decimal = ZERO,
                 stored: LotMemo | None = None) -> None:
        # Written out (the dataclass would generate the same): under mypyc an explicit __init__ is compiled,
        # the generated one runs interpreted. The same holds for the other hot records of this module.
        self.lot_id = lot_id
        self.points = points
        self.remaining = remaining
        self.promised = promised
        self.earned_at = earned_at
        self.available_at = available_at
        self.expires_at = expires_at
        self.source_event_id = source_event_id
        self.origin = origin
        self.condition_code = condition_code
        self.bill_number = bill_number
        self.line_item_id = line_item_id
        self.expiry_code = expiry_code
        self.rolling = rolling
        self.reminded = reminded
        self.cap_keys = cap_keys
        self.shortfall = shortfall
        self.stored = stored

    @property
    def spendable(self) -> bool:
        return not self.promised and self.remaining > ZERO


class LotMemo:
    """A lot's codec memo: its stored row and every field's value when stored. While each field still holds the
    very object stored, the lot is unchanged and encodes as that row (every field type is immutable, so any
    change to a lot replaces an object). A native record, not a list: the compares are plain reads.

    `text`: the row's JSON after a comma once a settled encode (`_lot_texts`) needed it; `own`: the row was
    written by this codec (not decoded as stored, see `_lot_to`)."""

    __slots__ = ("available_at", "bill_number", "cap_keys", "condition_code", "earned_at", "expires_at",
                 "expiry_code", "line_item_id", "lot_id", "origin", "own", "points", "promised", "remaining",
                 "reminded", "rolling", "row", "shortfall", "source_event_id", "text")

    def __init__(self, row: list[Any], lot_id: str, points: Decimal, remaining: Decimal, promised: bool,
                 earned_at: datetime, available_at: datetime | None, expires_at: datetime | None,
                 source_event_id: str, origin: str, condition_code: str | None, bill_number: str | None,
                 line_item_id: str | None, expiry_code: str | None, rolling: bool, reminded: tuple[int, ...],
                 cap_keys: tuple[str, ...], shortfall: Decimal, text: bytes | None, own: bool) -> None:
        self.row = row
        self.lot_id = lot_id
        self.points = points
        self.remaining = remaining
        self.promised = promised
        self.earned_at = earned_at
        self.available_at = available_at
        self.expires_at = expires_at
        self.source_event_id = source_event_id
        self.origin = origin
        self.condition_code = condition_code
        self.bill_number = bill_number
        self.line_item_id = line_item_id
        self.expiry_code = expiry_code
        self.rolling = rolling
        self.reminded = reminded
        self.cap_keys = cap_keys
        self.shortfall = shortfall
        self.text = text
        self.own = own


@dataclass(slots=True)
class BillItem:
    item_id: str
    sku: str
    amount: Decimal
    quantity: Decimal
    returned_quantity: Decimal = ZERO
    returned_amount: Decimal = ZERO

    def __init__(self, item_id: str, sku: str, amount: Decimal, quantity: Decimal,
                 returned_quantity: Decimal = ZERO, returned_amount: Decimal = ZERO) -> None:
        self.item_id = item_id
        self.sku = sku
        self.amount = amount
        self.quantity = quantity
        self.returned_quantity = returned_quantity
        self.returned_amount = returned_amount


@dataclass(slots=True)
class Bill:
    """What a purchase earned, kept so a return can claw back exactly the points of the returned lines."""

    bill_number: str
    event_id: str
    event_time: datetime
    amount: Decimal
    items: dict[str, BillItem] = field(default_factory=dict)
    returned_amount: Decimal = ZERO
    fully_returned: bool = False

    def __init__(self, bill_number: str, event_id: str, event_time: datetime, amount: Decimal,
                 items: dict[str, BillItem] | None = None, returned_amount: Decimal = ZERO,
                 fully_returned: bool = False) -> None:
        self.bill_number = bill_number
        self.event_id = event_id
        self.event_time = event_time
        self.amount = amount
        self.items = {} if items is None else items
        self.returned_amount = returned_amount
        self.fully_returned = fully_returned


@dataclass(slots=True)
class Consumption:
    lot_id: str
    points: Decimal

    def __init__(self, lot_id: str, points: Decimal) -> None:
        self.lot_id = lot_id
        self.points = points


@dataclass(slots=True)
class Redemption:
    redemption_id: str
    event_id: str
    at: datetime
    points: Decimal
    bill_number: str | None
    consumed: list[Consumption] = field(default_factory=list)
    reversed: bool = False

    def __init__(self, redemption_id: str, event_id: str, at: datetime, points: Decimal, bill_number: str | None,
                 consumed: list[Consumption] | None = None, reversed: bool = False) -> None:
        self.redemption_id = redemption_id
        self.event_id = event_id
        self.at = at
        self.points = points
        self.bill_number = bill_number
        self.consumed = [] if consumed is None else consumed
        self.reversed = reversed


@dataclass(frozen=True, slots=True)
class Parked:
    """An activity waiting for the purchase or redemption it refers to (see `engine.parking`): the activity
    itself and where it was read, so it can run later as if it had just arrived, or be dead-lettered."""

    activity: Envelope
    source: SourceRef | None
    applied: bool = False
    """Already applied as far as it could be without its reference (a whole-bill return gave back the points
    that paid for a bill never seen): it waits only for the rest, and giving it up is silent."""


@dataclass(slots=True)
class CustomerState:
    customer_id: str
    program_id: str
    seq: int = 0
    tier: str | None = None
    registered_at: datetime | None = None
    membership_end: date | None = None
    custom_fields: dict[str, Any] = field(default_factory=dict)
    extended_fields: dict[str, Any] = field(default_factory=dict)
    lots: list[Lot] = field(default_factory=list)
    debt: Decimal = ZERO
    """Points owed after a return took more than was left (negative-balance policy)."""
    lifetime_earned: Decimal = ZERO
    lifetime_purchases: Decimal = ZERO
    purchase_count: int = 0
    redeemed: Decimal = ZERO
    expired: Decimal = ZERO
    returned: Decimal = ZERO
    counters: dict[str, Decimal] = field(default_factory=dict)
    """Cap and limit usage, keyed by what they count and their period (event time)."""
    redemptions: MutableMapping[str, Redemption] = field(default_factory=dict)
    bills: MutableMapping[str, Bill] = field(default_factory=dict)
    recent_event_ids: dict[str, None] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    """Highest processed offset per 'topic:partition': at-least-once redelivery is dropped by offset."""
    last_event_time: datetime | None = None
    parked: list[Parked] = field(default_factory=list)
    """Activities waiting for what they refer to, in arrival order (bounded: `engine.parking`)."""
    coded: StateTexts | None = field(default=None, compare=False, repr=False)
    """The codec's memo of the head's and counters' texts (`StateTexts`), shared by copies."""

    def __init__(
        self, customer_id: str, program_id: str, seq: int = 0, tier: str | None = None,
        registered_at: datetime | None = None, membership_end: date | None = None,
        custom_fields: dict[str, Any] | None = None, extended_fields: dict[str, Any] | None = None,
        lots: list[Lot] | None = None, debt: Decimal = ZERO, lifetime_earned: Decimal = ZERO,
        lifetime_purchases: Decimal = ZERO, purchase_count: int = 0, redeemed: Decimal = ZERO,
        expired: Decimal = ZERO, returned: Decimal = ZERO, counters: dict[str, Decimal] | None = None,
        redemptions: MutableMapping[str, Redemption] | None = None, bills: MutableMapping[str, Bill] | None = None,
        recent_event_ids: dict[str, None] | None = None, offsets: dict[str, int] | None = None,
        last_event_time: datetime | None = None, parked: list[Parked] | None = None,
        coded: StateTexts | None = None,
    ) -> None:
        self.customer_id = customer_id
        self.program_id = program_id
        self.seq = seq
        self.tier = tier
        self.registered_at = registered_at
        self.membership_end = membership_end
        self.custom_fields = {} if custom_fields is None else custom_fields
        self.extended_fields = {} if extended_fields is None else extended_fields
        self.lots = [] if lots is None else lots
        self.debt = debt
        self.lifetime_earned = lifetime_earned
        self.lifetime_purchases = lifetime_purchases
        self.purchase_count = purchase_count
        self.redeemed = redeemed
        self.expired = expired
        self.returned = returned
        self.counters = {} if counters is None else counters
        self.redemptions = {} if redemptions is None else redemptions
        self.bills = {} if bills is None else bills
        self.recent_event_ids = {} if recent_event_ids is None else recent_event_ids
        self.offsets = {} if offsets is None else offsets
        self.last_event_time = last_event_time
        self.parked = [] if parked is None else parked
        self.coded = coded

    # Derived balances -------------------------------------------------------------------------------
    @property
    def current(self) -> Decimal:
        return sum((lot.remaining for lot in self.lots if not lot.promised), ZERO) - self.debt

    @property
    def promised(self) -> Decimal:
        return sum((lot.remaining for lot in self.lots if lot.promised), ZERO)

    def lot(self, lot_id: str) -> Lot | None:
        for lot in self.lots:
            if lot.lot_id == lot_id:
                return lot
        return None

    def remember(self, event_id: str) -> None:
        ids = self.recent_event_ids
        ids[event_id] = None
        if len(ids) > RECENT_EVENT_IDS:
            del ids[next(iter(ids))]

    def seen(self, event_id: str) -> bool:
        return event_id in self.recent_event_ids


def new_state(customer_id: str, program_id: str) -> CustomerState:
    return CustomerState(customer_id=customer_id, program_id=program_id)


def copy_state(state: CustomerState) -> CustomerState:
    """A copy sharing nothing the engine changes: every mutable container and record is copied, the immutable
    values (strings, Decimals, date-times, tuples) are shared. Equivalent to a codec round trip, faster."""
    bills = state.bills
    redemptions = state.redemptions
    return CustomerState(
        customer_id=state.customer_id, program_id=state.program_id, seq=state.seq, tier=state.tier,
        registered_at=state.registered_at, membership_end=state.membership_end,
        custom_fields=dict(state.custom_fields), extended_fields=dict(state.extended_fields),
        lots=[replace(lot) for lot in state.lots],
        debt=state.debt, lifetime_earned=state.lifetime_earned, lifetime_purchases=state.lifetime_purchases,
        purchase_count=state.purchase_count, redeemed=state.redeemed, expired=state.expired,
        returned=state.returned, counters=dict(state.counters),
        redemptions=(StoredRows({k: v if type(v) is list else _copy_redemption(v)
                                 for k, v in redemptions.peek_all().items()}, _redemption_from)
                     if isinstance(redemptions, StoredRows)
                     else {k: _copy_redemption(v) for k, v in redemptions.items()}),
        bills=(StoredRows({k: v if type(v) is list else _copy_bill(v) for k, v in bills.peek_all().items()},
                          _bill_from)
               if isinstance(bills, StoredRows) else {k: _copy_bill(v) for k, v in bills.items()}),
        recent_event_ids=dict(state.recent_event_ids), offsets=dict(state.offsets),
        last_event_time=state.last_event_time, parked=list(state.parked), coded=state.coded,
    )


def _copy_bill(bill: Bill) -> Bill:
    return replace(bill, items={k: replace(item) for k, item in bill.items.items()})


def _copy_redemption(redemption: Redemption) -> Redemption:
    return replace(redemption, consumed=[replace(c) for c in redemption.consumed])


# Codec ----------------------------------------------------------------------------------------------
# Explicit field lists keep the stored form stable and fast; Decimal and datetime go as ISO strings.
#
# Decoding is the hot path of every record the worker processes, so it is lazy where the engine allows:
# bills and redemptions stay stored rows until something reads them (`StoredRows`), and are written back
# as those rows when nothing did; a lot keeps its stored row and encodes as it while it is unchanged.
# Identical date-time strings within one state (lots of one purchase, expiry midnights) are parsed once.

V = TypeVar("V")
T = TypeVar("T")
_ABSENT: Final = object()
"""`StoredRows.get`'s marker of a key not held (a held value may be anything)."""


class StoredRows(MutableMapping[str, V]):
    """Bills or redemptions as decoded from the store: each entry is decoded on first access, in place (the
    mapping keeps the stored order), and entries never read encode back as the rows they were stored as.

    `texts`: from settled encodes (`_settled_rows`), each entry's JSON with the row it was written from; an
    entry still holding that very row is written as that JSON by the next settled encode."""

    __slots__ = ("_decode", "_items", "_texts")

    def __init__(self, rows: dict[str, Any], decode: Callable[[str, Any], V],
                 texts: dict[str, tuple[Any, bytes]] | None = None) -> None:
        self._items: dict[str, Any] = dict(rows)  # rows are only read, never changed
        self._decode = decode
        self._texts = texts

    def __getitem__(self, key: str) -> V:
        value = self._items[key]
        if type(value) is list:  # a stored row: decode it once
            value = self._items[key] = self._decode(key, value)
        result: V = value
        return result

    def __setitem__(self, key: str, value: V) -> None:
        self._items[key] = value

    def __delitem__(self, key: str) -> None:
        del self._items[key]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    @overload
    def get(self, key: str, /) -> V | None: ...
    @overload
    def get(self, key: str, default: V, /) -> V: ...
    @overload
    def get(self, key: str, default: T, /) -> V | T: ...

    def get(self, key: str, default: object = None) -> object:
        """`Mapping.get`, compiled: the inherited one runs interpreted and reaches a key not held (every new
        bill's number, every new redemption's id) through `__getitem__`'s KeyError and its traceback."""
        value = self._items.get(key, _ABSENT)
        if value is _ABSENT:
            return default
        if type(value) is list:  # a stored row: decode it once (as `__getitem__`)
            value = self._items[key] = self._decode(key, value)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(dict(self.items()))

    def peek_all(self) -> dict[str, Any]:
        """Every entry as it is held (a stored row, or the decoded value), decoding nothing; read only."""
        return self._items

    def rows(self, encode: Callable[[V], Any]) -> dict[str, Any]:
        """The stored form: rows never decoded as they were, the others encoded with `encode`."""
        return {key: value if type(value) is list else encode(value) for key, value in self._items.items()}

    def texts(self) -> dict[str, tuple[Any, bytes]] | None:
        """The entries' JSON from the settled encodes of this mapping, if one was (see `__init__`)."""
        return self._texts

    def keep_texts(self, texts: dict[str, tuple[Any, bytes]]) -> None:
        """Keep `texts` as the entries' JSON (see `_settled_rows`)."""
        self._texts = texts


def _t(value: datetime | None) -> str | None:
    return None if value is None else iso_text(value)


_ISO: Final = TextMemo()
_ORJSON_ZONES: Final[IdentityMemo[bool]] = IdentityMemo()
"""Per fixed-offset zone: whether orjson writes its date-times as `isoformat`."""
_DUMPS: Final = orjson.dumps
_FRAGMENT: Final = orjson.Fragment
_TIMEZONE: Final = timezone
"""(Statics: an imported or module-level name is a dict lookup per use, a `Final` one a C static.)"""


def iso_text(at: datetime) -> str:
    """`at.isoformat()`, remembered per date-time object: formatting costs more than the rest of a new lot's
    row, and lots share a few objects (one activity's times; stored texts are parsed once). A new one is
    formatted by orjson, in half the time (`isoformat` builds its text through a printf-like format), where
    that gives the same text: a `timezone` whose offset is whole minutes (orjson drops an offset's seconds)."""
    text = _ISO.get(at)
    if text is not None:
        return text
    zone = at.tzinfo
    if zone is not None and type(zone) is _TIMEZONE and _orjson_zone(zone):
        text = _DUMPS(at)[1:-1].decode()
    else:
        text = at.isoformat()
    return _ISO.put(at, text)


def _orjson_zone(zone: tzinfo) -> bool:
    """Whether a fixed-offset zone's offset is whole minutes (then orjson writes what `isoformat` does)."""
    known = _ORJSON_ZONES.get(zone)
    if known is not None:
        return known
    offset = zone.utcoffset(None)
    return _ORJSON_ZONES.put(zone, offset is not None and offset.microseconds == 0 and offset.seconds % 60 == 0)


def _pt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"$d": str(value)}
    return value


def _unjson(value: Any) -> Any:
    if isinstance(value, dict) and "$d" in value:
        return Decimal(value["$d"])
    return value


def _same_but_promised(lot: Lot, memo: LotMemo) -> bool:
    """Whether every field but `promised` still holds the object the lot's memo was made from (the fields the
    engine changes are tested first)."""
    return (
        memo.remaining is lot.remaining and memo.reminded is lot.reminded and memo.available_at is lot.available_at
        and memo.expires_at is lot.expires_at and memo.shortfall is lot.shortfall and memo.cap_keys is lot.cap_keys
        and memo.lot_id is lot.lot_id and memo.points is lot.points and memo.earned_at is lot.earned_at
        and memo.source_event_id is lot.source_event_id and memo.origin is lot.origin
        and memo.condition_code is lot.condition_code and memo.bill_number is lot.bill_number
        and memo.line_item_id is lot.line_item_id and memo.expiry_code is lot.expiry_code
        and memo.rolling == lot.rolling
    )


def _repromised(lot: Lot, memo: LotMemo) -> bytes | None:
    """The JSON of a lot whose only change since this codec wrote its JSON is its `promised` flag (a delayed
    accrual converted: most changed lots that are not new), as a full encode writes it: the kept JSON with the
    flag replaced, the memo updated to match, in place (copies of a lot share it: each still compares its own
    fields with it, and the row is a new one: the old one may be held, see `state_to_dict`). None if the memo
    has no JSON or its row is not this codec's (the caller knows the rest unchanged). The flag's offset follows
    from the lengths of what comes before it: `,[`, the id's JSON, `,"points","remaining",` (Decimal texts:
    nothing escaped; a decoded row's texts are not known to be, hence written here only).

    The id's JSON is read off the kept text instead of serialised again: for an id without a quote, its JSON
    holds no quote byte but the two around it (escapes and UTF-8 only lengthen it, and add no 0x22), so a
    quote just after `len(id)` bytes of it is the closing one exactly when the JSON is the id in quotes."""
    kept = memo.text
    if kept is None or not memo.own:
        return None
    promised = lot.promised
    was = memo.row
    lot_id = lot.lot_id
    size = len(lot_id)
    at = len(was[1]) + len(was[2]) + 9
    if '"' not in lot_id and kept[size + 3] == 34:  # `,["` + the id's characters + `"`
        at += size + 2
    else:
        at += len(_DUMPS(lot_id))
    text = kept[:at] + (b"true" if promised else b"false") + kept[at + (5 if promised else 4):]
    row = list(was)
    row[3] = promised
    memo.row = row
    memo.promised = promised
    memo.text = text
    return text


def _lot_rows(lots: list[Lot]) -> list[list[Any]]:
    """The stored rows of the lots: an unchanged lot's is the row it was stored as."""
    rows: list[list[Any]] = []
    last: LotMemo | None = None
    for lot in lots:
        memo = lot.stored
        if memo is not None and memo.promised == lot.promised and _same_but_promised(lot, memo):
            rows.append(memo.row)
        else:
            rows.append(_lot_to(lot, last))
            last = lot.stored
    return rows


def _lot_texts(lots: list[Lot], parts: list[bytes]) -> None:
    """Append each lot's JSON to `parts` (what `orjson.dumps(_lot_rows(lots))` writes for it, after a comma), kept
    in its memo while it is unchanged: for the states that live on as objects (the processor's cache), where
    serialising the rows of the unchanged lots again cost more than the rest of the encoding.

    A lot's kept text is its JSON after a comma (`,[...]`): the settled encode's join is a copy holding only its
    own bytes, where orjson's own result holds at least 4 KiB (see `codec.right_sized`): kept as it was, the
    cached states' lot texts held 4 KiB a lot (most of a 1.6 GB process after 100k activities)."""
    dumps = _DUMPS  # (a static: `orjson.dumps` is a module attribute lookup per call)
    last: LotMemo | None = None
    for lot in lots:
        memo = lot.stored
        text: bytes | None = None
        if memo is not None and _same_but_promised(lot, memo):
            if memo.promised == lot.promised:
                text = memo.text
                if text is None:
                    text = memo.text = b"," + dumps(memo.row)
            else:
                text = _repromised(lot, memo)
        if text is None:
            text = b"," + dumps(_lot_to(lot, last))
            last = lot.stored
            assert last is not None
            last.text = text
        parts.append(text)


def _closed(parts: list[bytes], first: int, closing: bytes) -> None:
    """Close the JSON array (or object) whose elements' (or members') texts, each after its comma, were appended
    to `parts` from index `first` after its opening: the first loses its comma. Joined, that is what orjson
    writes for the whole (compact: no spaces)."""
    if len(parts) > first:
        parts[first] = parts[first][1:]
    parts.append(closing)


def _lot_to(lot: Lot, last: LotMemo | None) -> list[Any]:
    """A new or changed lot's row, remembered in `lot.stored` with the fields it was taken from. A changed lot
    whose row this codec wrote (not one decoded as stored) takes the texts of its unchanged date-times and
    points from that row: what formatting them again would give (the row was formatted from those very
    objects), without the cost (a date-time's text costs more than the rest of the row). Any other lot takes
    them likewise from `last`, the memo of the lot written just before in the same encode, where it holds the
    same objects: one activity's new lots share their date-times."""
    available_at, expires_at = lot.available_at, lot.expires_at
    earned_at, points, remaining, shortfall = lot.earned_at, lot.points, lot.remaining, lot.shortfall
    old = lot.stored
    if old is None or not old.own:  # new, or decoded as stored
        old = last
    if old is not None:
        was = old.row
        earned_text = was[4] if old.earned_at is earned_at else iso_text(earned_at)
        available_text = (was[5] if old.available_at is available_at else
                          None if available_at is None else iso_text(available_at))
        expires_text = was[6] if old.expires_at is expires_at else None if expires_at is None else iso_text(expires_at)
        points_text = was[1] if old.points is points else str(points)
    else:
        earned_text = iso_text(earned_at)
        available_text = None if available_at is None else iso_text(available_at)
        expires_text = None if expires_at is None else iso_text(expires_at)
        points_text = str(points)
    # A new lot's remaining is its points, and its shortfall the shared ZERO (not merely equal: "0.00").
    lot_id, promised, source_event_id, origin = lot.lot_id, lot.promised, lot.source_event_id, lot.origin
    condition_code, bill_number, line_item_id, expiry_code = (lot.condition_code, lot.bill_number, lot.line_item_id,
                                                              lot.expiry_code)
    rolling, reminded, cap_keys = lot.rolling, lot.reminded, lot.cap_keys
    row = [
        lot_id, points_text, points_text if remaining is points else str(remaining), promised,
        earned_text, available_text, expires_text, source_event_id, origin, condition_code,
        bill_number, line_item_id, expiry_code, rolling, list(reminded) if reminded else [],
        list(cap_keys) if cap_keys else [], _str(shortfall),
    ]
    lot.stored = LotMemo(row, lot_id, points, remaining, promised, earned_at, available_at, expires_at,
                         source_event_id, origin, condition_code, bill_number, line_item_id, expiry_code, rolling,
                         reminded, cap_keys, shortfall, None, True)
    return row


@lru_cache(maxsize=65536)
def parse_stored_time(text: str) -> datetime:
    """A stored date-time (the same few texts recur across customers: expiry and availability midnights)."""
    return fixed(datetime.fromisoformat(text))


def _lots_from(rows: list[list[Any]]) -> list[Lot]:
    lots: list[Lot] = []
    parse = parse_stored_time  # a hit is cheaper than any memo of the state's own
    for row in rows:
        earned_at = parse(row[4])
        text = row[5]
        available_at = None if text is None else parse(text)
        text = row[6]
        expires_at = None if text is None else parse(text)
        reminded = tuple(row[14]) if row[14] else ()
        cap_keys = tuple(row[15]) if row[15] else ()
        shortfall = ZERO if len(row) <= 16 or row[16] == "0" else Decimal(row[16])
        points = Decimal(row[1])
        remaining = points if row[2] == row[1] else Decimal(row[2])
        # Each field by name and the memo of them spelt out (not one tuple splatted twice): mypyc then calls
        # the compiled `Lot.__init__` directly instead of through a generic call.
        lot_id, promised, source_event_id, origin = row[0], row[3], row[7], row[8]
        condition_code, bill_number, line_item_id, expiry_code, rolling = row[9], row[10], row[11], row[12], row[13]
        lots.append(Lot(lot_id, points, remaining, promised, earned_at, available_at, expires_at, source_event_id,
                        origin, condition_code, bill_number, line_item_id, expiry_code, rolling, reminded, cap_keys,
                        shortfall,
                        LotMemo(row, lot_id, points, remaining, promised, earned_at, available_at, expires_at,
                                source_event_id, origin, condition_code, bill_number, line_item_id, expiry_code,
                                rolling, reminded, cap_keys, shortfall, None, False)))
    return lots


def _bill_to(bill: Bill) -> list[Any]:
    return [bill.event_id, _t(bill.event_time), str(bill.amount), _str(bill.returned_amount), bill.fully_returned,
            [[i.item_id, i.sku, str(i.amount), str(i.quantity), _str(i.returned_quantity), _str(i.returned_amount)]
             for i in bill.items.values()]]


def _str(value: Decimal) -> str:
    """`str(value)`, without formatting the shared ZERO (what a new bill or lot holds until a return)."""
    return "0" if value is ZERO else str(value)


def _bill_from(number: str, row: list[Any]) -> Bill:
    event_id, event_time, amount, returned_amount, fully, items = row
    return Bill(
        bill_number=number, event_id=event_id, event_time=parse_stored_time(event_time), amount=Decimal(amount),
        returned_amount=Decimal(returned_amount), fully_returned=fully,
        items={
            item[0]: BillItem(item[0], item[1], Decimal(item[2]), Decimal(item[3]), Decimal(item[4]),
                              Decimal(item[5]))
            for item in items
        },
    )


def _redemption_to(r: Redemption) -> list[Any]:
    return [r.event_id, _t(r.at), str(r.points), r.bill_number, [[c.lot_id, str(c.points)] for c in r.consumed],
            r.reversed]


def _redemption_from(rid: str, row: list[Any]) -> Redemption:
    event_id, at, points, bill, consumed, was_reversed = row
    return Redemption(
        redemption_id=rid, event_id=event_id, at=parse_stored_time(at), points=Decimal(points), bill_number=bill,
        consumed=[Consumption(lot_id, Decimal(p)) for lot_id, p in consumed], reversed=was_reversed,
    )


def _parked_to(parked: Parked) -> list[Any]:
    source = parked.source
    return [orjson.loads(encode(parked.activity)),
            None if source is None else [source.topic, source.partition, source.offset], parked.applied]


def _parked_from(row: list[Any]) -> Parked:
    message, source, applied = row
    activity: Envelope = activity_adapter.validate_python(message)
    where = None if source is None else SourceRef(topic=source[0], partition=source[1], offset=source[2])
    return Parked(activity, where, applied)


def _rows(items: MutableMapping[str, V], encode: Callable[[V], Any]) -> dict[str, Any]:
    if isinstance(items, StoredRows):
        return items.rows(encode)
    return {key: encode(value) for key, value in items.items()}


def _settled_rows(items: MutableMapping[str, V], encode: Callable[[V], Any], decode: Callable[[str, Any], V],
                  parts: list[bytes]) -> StoredRows[V]:
    """Bills or redemptions for a settled encode: the `StoredRows` of their rows (what a fresh decode holds);
    each entry's JSON (the member `orjson.dumps` of the rows writes) is appended to `parts`. An entry still
    holding the row a previous settled encode wrote is written as the JSON kept then (serialising every bill's
    row again was a third of a cached state's encoding); the others are serialised, and every entry's JSON is
    kept for the next. `StoredRows` are settled in place (their entries and texts updated, not rebuilt: the
    engine changes them through `__setitem__` and `__delitem__` only, and a kept text is the one of its very row).

    An entry's JSON is `,"key":row` (its comma first, as a lot's in `_lot_texts`), closed by `_closed`."""
    dumps = _DUMPS
    row: Any
    if not isinstance(items, StoredRows):
        rows: dict[str, Any] = {}
        fresh: dict[str, tuple[Any, bytes]] = {}
        plain: dict[str, V] = items if type(items) is dict else dict(items.items())  # a dict's native iteration
        for key, value in plain.items():
            row = value if type(value) is list else encode(value)
            text = b"," + dumps({key: row})[1:-1]
            rows[key] = row
            fresh[key] = (row, text)
            parts.append(text)
        return StoredRows(rows, decode, fresh)
    held = items.peek_all()
    texts = items.texts()
    if texts is None:
        texts = {}
        items.keep_texts(texts)
    for key, value in held.items():
        if type(value) is list:
            kept = texts.get(key)
            if kept is not None and kept[0] is value:
                parts.append(kept[1])
                continue
            row = value
        else:
            row = encode(value)
            held[key] = row  # an existing key's value: the dict's size and order stay
        text = b"," + dumps({key: row})[1:-1]
        texts[key] = (row, text)
        parts.append(text)
    if len(texts) > len(held):  # entries gone: keep only the present ones' texts
        items.keep_texts({key: texts[key] for key in held})
    return items


def state_to_dict(state: CustomerState) -> dict[str, Any]:
    """The stored form of a customer (plain JSON data). Parked activities are stored (as their canonical JSON
    and source) only when there are any."""
    return _state_dict(state, _lot_rows(state.lots), _rows(state.redemptions, _redemption_to),
                       _rows(state.bills, _bill_to))


def _state_dict(state: CustomerState, lots: Any, redemptions: Any, bills: Any) -> dict[str, Any]:
    """`state_to_dict` with the stored form of the lots, redemptions and bills given (their rows, or their
    JSON as an `orjson.Fragment`)."""
    data = _head(state)
    data["lots"] = lots
    data.update(_middle(state))
    data["redemptions"] = redemptions
    data["bills"] = bills
    data.update(_tail(state))
    return data


def _free_form(fields: dict[str, Any]) -> dict[str, Any]:
    """A free-form field dict (`custom_fields`, `extended_fields`) as its JSON holds it."""
    return {k: _jsonable(v) for k, v in fields.items()}


# The stored form's keys in their order: `_head`, "lots", `_middle`, "redemptions", "bills", `_tail`.
def _head(state: CustomerState) -> dict[str, Any]:
    return {
        "v": 1,
        "customer_id": state.customer_id,
        "program_id": state.program_id,
        "seq": state.seq,
        "tier": state.tier,
        "registered_at": _t(state.registered_at),
        "membership_end": None if state.membership_end is None else state.membership_end.isoformat(),
        "custom_fields": _free_form(state.custom_fields),
        "extended_fields": _free_form(state.extended_fields),
    }


def _middle(state: CustomerState) -> dict[str, Any]:
    return {
        "debt": str(state.debt),
        "lifetime_earned": str(state.lifetime_earned),
        "lifetime_purchases": str(state.lifetime_purchases),
        "purchase_count": state.purchase_count,
        "redeemed": str(state.redeemed),
        "expired": str(state.expired),
        "returned": str(state.returned),
        "counters": {k: str(v) for k, v in state.counters.items()},
    }


def _tail(state: CustomerState) -> dict[str, Any]:
    """Parked activities are stored (as their canonical JSON and source) only when there are any."""
    data: dict[str, Any] = {
        "recent_event_ids": list(state.recent_event_ids),
        "offsets": state.offsets,
        "last_event_time": _t(state.last_event_time),
    }
    if state.parked:
        data["parked"] = [_parked_to(p) for p in state.parked]
    return data


class StateTexts:
    """A settled encode's texts of a state's head and counters, each with the objects it was formatted from:
    the next settled encode (the processor's cached state, once a record) writes what still holds those very
    objects as kept. Formatting a Decimal costs more than the rest of its member, and most of them, and every
    field of the head but `seq`, are the same objects record after record. Texts are keyed by identity (equal
    Decimals can have other texts), so copies of a state may share this memo."""

    __slots__ = ("counters", "customer_id", "debt", "debt_text", "earned", "earned_text", "expired",
                 "expired_text", "head", "head_mid", "head_rest", "membership_end", "program_id", "purchases",
                 "purchases_text", "redeemed", "redeemed_text", "registered_at", "returned", "returned_text", "tier")

    def __init__(self) -> None:
        # `head` is None until a head was kept; then it and `head_rest` are the JSON around the seq's digits,
        # `head_mid` the start of `head_rest` up to the free-form fields.
        self.head: bytes | None = None
        self.head_mid = b""
        self.head_rest = b""
        self.customer_id = ""
        self.program_id = ""
        self.tier: str | None = None
        self.registered_at: datetime | None = None
        self.membership_end: date | None = None
        self.debt = self.earned = self.purchases = self.redeemed = self.expired = self.returned = ZERO
        self.debt_text = self.earned_text = self.purchases_text = "0"
        self.redeemed_text = self.expired_text = self.returned_text = "0"
        self.counters: dict[str, tuple[Decimal, str, str]] = {}
        """Per counter: its value, its key's JSON and its member's JSON (`"key":"value"`)."""


def _head_parts(state: CustomerState, texts: StateTexts, parts: list[bytes]) -> None:
    """Append what `dumps(_head(state))[:-1]` writes, then `,"lots":[`: the JSON before and after `seq` as kept
    while the fields around it are the same objects, the seq's digits (an int: what orjson writes). The
    free-form fields (their dicts change in place) are written afresh unless empty."""
    customer_id, program_id, tier = state.customer_id, state.program_id, state.tier
    registered_at, membership_end = state.registered_at, state.membership_end
    head = texts.head
    if (head is None or texts.customer_id is not customer_id or texts.program_id is not program_id
            or texts.tier is not tier or texts.registered_at is not registered_at
            or texts.membership_end is not membership_end):
        head = texts.head = _DUMPS({"v": 1, "customer_id": customer_id, "program_id": program_id})[:-1] + b',"seq":'
        texts.head_mid = b"," + _DUMPS({
            "tier": tier, "registered_at": _t(registered_at),
            "membership_end": None if membership_end is None else membership_end.isoformat(),
        })[1:-1]
        texts.head_rest = texts.head_mid + b',"custom_fields":{},"extended_fields":{},"lots":['
        texts.customer_id, texts.program_id, texts.tier = customer_id, program_id, tier
        texts.registered_at, texts.membership_end = registered_at, membership_end
    parts.append(head)
    parts.append(str(state.seq).encode())
    custom, extended = state.custom_fields, state.extended_fields
    if custom or extended:
        parts.append(texts.head_mid)
        parts.append(b',"custom_fields":' + _DUMPS(_free_form(custom))
                     + b',"extended_fields":' + _DUMPS(_free_form(extended))
                     + b',"lots":[')
    else:
        parts.append(texts.head_rest)


def _middle_json(state: CustomerState, texts: StateTexts) -> bytes:
    """What `dumps(_middle(state))[1:-1]` writes: each Decimal's text as kept while it is the same object (Decimal
    texts need no escaping), each counter's member likewise."""
    value = state.debt
    if value is not texts.debt:
        texts.debt, texts.debt_text = value, _str(value)
    value = state.lifetime_earned
    if value is not texts.earned:
        texts.earned, texts.earned_text = value, _str(value)
    value = state.lifetime_purchases
    if value is not texts.purchases:
        texts.purchases, texts.purchases_text = value, _str(value)
    value = state.redeemed
    if value is not texts.redeemed:
        texts.redeemed, texts.redeemed_text = value, _str(value)
    value = state.expired
    if value is not texts.expired:
        texts.expired, texts.expired_text = value, _str(value)
    value = state.returned
    if value is not texts.returned:
        texts.returned, texts.returned_text = value, _str(value)
    counters = state.counters
    kept = texts.counters
    members: list[str] = []
    for key, count in counters.items():
        hit = kept.get(key)
        if hit is None or hit[0] is not count:
            key_json = _DUMPS(key).decode() if hit is None else hit[1]
            hit = kept[key] = (count, key_json, f'{key_json}:"{_str(count)}"')
        members.append(hit[2])
    if len(kept) > len(counters):  # counters gone: keep only the present ones' texts
        texts.counters = {key: kept[key] for key in counters}
    return (f'"debt":"{texts.debt_text}","lifetime_earned":"{texts.earned_text}",'
            f'"lifetime_purchases":"{texts.purchases_text}","purchase_count":{state.purchase_count},'
            f'"redeemed":"{texts.redeemed_text}","expired":"{texts.expired_text}",'
            f'"returned":"{texts.returned_text}","counters":{{{",".join(members)}}}').encode()


def state_from_dict(data: dict[str, Any]) -> CustomerState:
    """The state a `state_to_dict` result describes. Its rows are read, never changed, and may be kept (bills
    and redemptions are decoded from them on first access; lots encode back as them while unchanged)."""
    membership_end = data["membership_end"]
    custom_fields = data["custom_fields"]
    extended_fields = data["extended_fields"]
    parked = data.get("parked")
    return CustomerState(
        customer_id=data["customer_id"],
        program_id=data["program_id"],
        seq=data["seq"],
        tier=data["tier"],
        registered_at=_pt(data["registered_at"]),
        membership_end=None if membership_end is None else date.fromisoformat(membership_end),
        custom_fields={k: _unjson(v) for k, v in custom_fields.items()} if custom_fields else {},
        extended_fields={k: _unjson(v) for k, v in extended_fields.items()} if extended_fields else {},
        lots=_lots_from(data["lots"]),
        debt=Decimal(data["debt"]),
        lifetime_earned=Decimal(data["lifetime_earned"]),
        lifetime_purchases=Decimal(data["lifetime_purchases"]),
        purchase_count=data["purchase_count"],
        redeemed=Decimal(data["redeemed"]),
        expired=Decimal(data["expired"]),
        returned=Decimal(data["returned"]),
        counters={k: Decimal(v) for k, v in data["counters"].items()},
        redemptions=StoredRows(data["redemptions"], _redemption_from),
        bills=StoredRows(data["bills"], _bill_from),
        recent_event_ids=dict.fromkeys(data["recent_event_ids"]),
        offsets=dict(data["offsets"]),
        last_event_time=_pt(data["last_event_time"]),
        parked=[_parked_from(row) for row in parked] if parked else [],
    )


_REDEMPTION_TO: Final = _redemption_to
_REDEMPTION_FROM: Final = _redemption_from
_BILL_TO: Final = _bill_to
_BILL_FROM: Final = _bill_from


def state_to_json(state: CustomerState, *, settle: bool = False) -> bytes:
    """`orjson.dumps(state_to_dict(state))`: unchanged lots are written as the rows they were stored as, and
    bills and redemptions never decoded as those rows. A settled encode writes the lots from each lot's JSON
    (`_lot_texts`; one `orjson.Fragment` for the list, or one per lot, measured no faster), which it keeps
    for the next: the processor's cached states, encoded once per record, skip serialising unchanged lots.
    Bills and redemptions likewise, per entry (`_settled_rows`).

    `settle`: for a state that lives on as an object after it is stored (the processor's state cache), turn
    its bills and redemptions back into the rows just written, as a fresh decode would hold them. Otherwise
    every bill the state ever read or made stays an object and is encoded again on every later activity:
    a cached state then cost more than decoding it afresh. The state stays equal (rows decode on access);
    only a caller holding one of its bill or redemption objects would stop seeing it in the state. A settled
    encode's bytes hold only their own bytes (no `codec.right_sized` copy needed)."""
    if not settle:
        return orjson.dumps(state_to_dict(state))
    # The sections joined in one copy (what orjson writes for `state_to_dict`, compact): the result holds only
    # its own bytes (see `codec.right_sized`), and each lot's, bill's and redemption's JSON is copied once.
    dumps = _DUMPS
    texts = state.coded
    if texts is None:
        texts = state.coded = StateTexts()
    parts: list[bytes] = []
    _head_parts(state, texts, parts)
    first = len(parts)
    _lot_texts(state.lots, parts)
    _closed(parts, first, b"],")
    parts.append(_middle_json(state, texts))
    parts.append(b',"redemptions":{')
    first = len(parts)
    redemptions = _settled_rows(state.redemptions, _REDEMPTION_TO, _REDEMPTION_FROM, parts)
    _closed(parts, first, b'},"bills":{')
    first = len(parts)
    bills = _settled_rows(state.bills, _BILL_TO, _BILL_FROM, parts)
    _closed(parts, first, b"},")
    parts.append(dumps(_tail(state))[1:])
    state.bills = bills
    state.redemptions = redemptions
    return b"".join(parts)
