"""Customer state: points live in lots, balances are derived from them.

A lot is one credit (amount, source event, line item, earned/available/expiry dates). Redemptions consume lots
and remember which, so expiry never takes the same points twice and reversals restore the original expiry.
The state is plain slotted dataclasses with an explicit, orjson-friendly codec: it is what the Faust table
stores, so it must be small, fast to (de)serialise and free of framework types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

ZERO = Decimal(0)

RECENT_EVENT_IDS = 512
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

    @property
    def spendable(self) -> bool:
        return not self.promised and self.remaining > ZERO


@dataclass(slots=True)
class BillItem:
    item_id: str
    sku: str
    amount: Decimal
    quantity: Decimal
    returned_quantity: Decimal = ZERO
    returned_amount: Decimal = ZERO


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


@dataclass(slots=True)
class Consumption:
    lot_id: str
    points: Decimal


@dataclass(slots=True)
class Redemption:
    redemption_id: str
    event_id: str
    at: datetime
    points: Decimal
    bill_number: str | None
    consumed: list[Consumption] = field(default_factory=list)
    reversed: bool = False


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
    redemptions: dict[str, Redemption] = field(default_factory=dict)
    bills: dict[str, Bill] = field(default_factory=dict)
    recent_event_ids: dict[str, None] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    """Highest processed offset per 'topic:partition': at-least-once redelivery is dropped by offset."""
    last_event_time: datetime | None = None

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


# Codec ----------------------------------------------------------------------------------------------
# Explicit field lists keep the stored form stable and fast; Decimal and datetime go as ISO strings.

def _d(value: Decimal) -> str:
    return str(value)


def _t(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


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


def _lot_to(lot: Lot) -> list[Any]:
    return [
        lot.lot_id, _d(lot.points), _d(lot.remaining), lot.promised, _t(lot.earned_at), _t(lot.available_at),
        _t(lot.expires_at), lot.source_event_id, lot.origin, lot.condition_code, lot.bill_number,
        lot.line_item_id, lot.expiry_code, lot.rolling, list(lot.reminded), list(lot.cap_keys),
        _d(lot.shortfall),
    ]


def _lot_from(row: list[Any]) -> Lot:
    earned_at = _pt(row[4])
    assert earned_at is not None
    return Lot(
        lot_id=row[0], points=Decimal(row[1]), remaining=Decimal(row[2]), promised=row[3], earned_at=earned_at,
        available_at=_pt(row[5]), expires_at=_pt(row[6]), source_event_id=row[7], origin=row[8],
        condition_code=row[9], bill_number=row[10], line_item_id=row[11], expiry_code=row[12], rolling=row[13],
        reminded=tuple(row[14]), cap_keys=tuple(row[15]),
        shortfall=Decimal(row[16]) if len(row) > 16 else ZERO,
    )


def state_to_dict(state: CustomerState) -> dict[str, Any]:
    return {
        "v": 1,
        "customer_id": state.customer_id,
        "program_id": state.program_id,
        "seq": state.seq,
        "tier": state.tier,
        "registered_at": _t(state.registered_at),
        "membership_end": None if state.membership_end is None else state.membership_end.isoformat(),
        "custom_fields": {k: _jsonable(v) for k, v in state.custom_fields.items()},
        "extended_fields": {k: _jsonable(v) for k, v in state.extended_fields.items()},
        "lots": [_lot_to(lot) for lot in state.lots],
        "debt": _d(state.debt),
        "lifetime_earned": _d(state.lifetime_earned),
        "lifetime_purchases": _d(state.lifetime_purchases),
        "purchase_count": state.purchase_count,
        "redeemed": _d(state.redeemed),
        "expired": _d(state.expired),
        "returned": _d(state.returned),
        "counters": {k: _d(v) for k, v in state.counters.items()},
        "redemptions": {
            rid: [r.event_id, _t(r.at), _d(r.points), r.bill_number,
                  [[c.lot_id, _d(c.points)] for c in r.consumed], r.reversed]
            for rid, r in state.redemptions.items()
        },
        "bills": {
            number: [b.event_id, _t(b.event_time), _d(b.amount), _d(b.returned_amount), b.fully_returned,
                     [[i.item_id, i.sku, _d(i.amount), _d(i.quantity), _d(i.returned_quantity),
                       _d(i.returned_amount)] for i in b.items.values()]]
            for number, b in state.bills.items()
        },
        "recent_event_ids": list(state.recent_event_ids),
        "offsets": state.offsets,
        "last_event_time": _t(state.last_event_time),
    }


def state_from_dict(data: dict[str, Any]) -> CustomerState:
    redemptions = {}
    for rid, (event_id, at, points, bill, consumed, was_reversed) in data["redemptions"].items():
        at_time = _pt(at)
        assert at_time is not None
        redemptions[rid] = Redemption(
            redemption_id=rid, event_id=event_id, at=at_time, points=Decimal(points), bill_number=bill,
            consumed=[Consumption(lot_id, Decimal(p)) for lot_id, p in consumed], reversed=was_reversed,
        )
    bills = {}
    for number, (event_id, event_time, amount, returned_amount, fully, items) in data["bills"].items():
        bill_time = _pt(event_time)
        assert bill_time is not None
        bills[number] = Bill(
            bill_number=number, event_id=event_id, event_time=bill_time, amount=Decimal(amount),
            returned_amount=Decimal(returned_amount), fully_returned=fully,
            items={
                row[0]: BillItem(row[0], row[1], Decimal(row[2]), Decimal(row[3]), Decimal(row[4]), Decimal(row[5]))
                for row in items
            },
        )
    membership_end = data["membership_end"]
    return CustomerState(
        customer_id=data["customer_id"],
        program_id=data["program_id"],
        seq=data["seq"],
        tier=data["tier"],
        registered_at=_pt(data["registered_at"]),
        membership_end=None if membership_end is None else date.fromisoformat(membership_end),
        custom_fields={k: _unjson(v) for k, v in data["custom_fields"].items()},
        extended_fields={k: _unjson(v) for k, v in data["extended_fields"].items()},
        lots=[_lot_from(row) for row in data["lots"]],
        debt=Decimal(data["debt"]),
        lifetime_earned=Decimal(data["lifetime_earned"]),
        lifetime_purchases=Decimal(data["lifetime_purchases"]),
        purchase_count=data["purchase_count"],
        redeemed=Decimal(data["redeemed"]),
        expired=Decimal(data["expired"]),
        returned=Decimal(data["returned"]),
        counters={k: Decimal(v) for k, v in data["counters"].items()},
        redemptions=redemptions,
        bills=bills,
        recent_event_ids=dict.fromkeys(data["recent_event_ids"]),
        offsets=dict(data["offsets"]),
        last_event_time=_pt(data["last_event_time"]),
    )
