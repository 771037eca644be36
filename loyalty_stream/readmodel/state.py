"""Pure state transitions of the read model: one customer's view, moved forward by output records.

Kept free of Redis and Kafka so the rules are unit-tested against the engine's own ledger: the projection
loads the views a batch touches, calls these functions, and writes back what they mark as pending.

Idempotence (Kafka delivers at least once, and a rebuild replays everything):

- Ledger entries apply only if their `seq` is above the last applied one (entries of one customer and program
  arrive in seq order: one key, one partition), so a redelivered or replayed entry is a no-op.
- A balance change applies if its `seq` is at least the stored one: a change that moved no ledger entry (a
  tier change only) carries the seq of the previous one, and a redelivered older change is followed, in
  partition order, by the newer one again.
- History, notifications and tier changes are keyed by their stable ids in Redis (a re-add is a no-op).

Balances come from whichever source is newest: a ledger entry (`balance_after`, `promised_after`; the ledger
is kept forever, so a rebuild always finds them) or a balance change (which also carries lifetime, redeemed,
expired, returned and the tier, but is kept for 30 days; until one is seen those fields are unknown).

Per-lot remainders follow the ledger alone: every entry that moves points names its lot (`lot_id`) and carries
the lot's expiry at that moment, and a lot whose expiry moves (rolling expiry, a changed membership end) gets a
REDATE entry (amount 0) that moves its points to the new expiry group. The one silent movement is debt: a
return can charge already-redeemed points as a negative balance, and the next credit pays it off before its lot
keeps anything. So the view tracks the debt the way the engine does (a return's claim is met from its lot
first, the rest becomes debt) and settles it from each credit.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

import orjson

from loyalty_stream.engine.history import describe
from loyalty_stream.events.outputs import (
    BalanceChange,
    Bucket,
    LedgerEntry,
    LedgerKind,
    Notification,
    TierChange,
)

ZERO = Decimal(0)
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _num(value: Decimal) -> str:
    """Decimal as plain text without exponent ('1E+2' -> '100'), as the outputs write them."""
    return format(value, "f")


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def last_usable_day(expires_at: datetime, zone: tzinfo | None = None) -> date:
    """`expires_at` is the instant points are gone (00:00 of the next local day): the day before it, in `zone`
    or else in the offset the engine wrote (the program's zone)."""
    before = expires_at - _MICROSECOND
    return (before.astimezone(zone) if zone is not None else before).date()


@dataclass(slots=True)
class LotView:
    """What the read model knows of one lot: enough to group points by expiry and by availability."""

    remaining: Decimal
    promised: bool
    expires_at: datetime | None = None
    available_at: datetime | None = None
    bill_number: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps({"r": _num(self.remaining), "p": self.promised, "x": _iso(self.expires_at),
                             "a": _iso(self.available_at), "b": self.bill_number})

    @classmethod
    def from_json(cls, raw: bytes | str) -> LotView:
        data = orjson.loads(raw)
        return cls(remaining=Decimal(data["r"]), promised=bool(data["p"]), expires_at=_time(data.get("x")),
                   available_at=_time(data.get("a")), bill_number=data.get("b"))


@dataclass(slots=True)
class Pending:
    """What a batch changed and the projection must write (ids make every write idempotent)."""

    balance: bool = False
    lots: set[str] = field(default_factory=set)
    history: list[tuple[int, str, bytes]] = field(default_factory=list)
    """(seq, entry id, JSON with `text`)."""
    notifications: list[tuple[int, str, bytes]] = field(default_factory=list)
    """(event time in ms, notification id, JSON)."""
    tier_changes: list[tuple[int, str, bytes]] = field(default_factory=list)
    """(event time in ms, change id, JSON)."""

    @property
    def any(self) -> bool:
        return bool(self.balance or self.lots or self.history or self.notifications or self.tier_changes)


@dataclass(slots=True)
class CustomerView:
    """One customer in one program, as the read model keeps it."""

    program_id: str
    customer_id: str
    seq: int = 0
    """Seq of the last ledger entry applied."""
    debt: Decimal = ZERO
    """Points owed after a return took more than was there (paid from the next credit)."""
    lots: dict[str, LotView] = field(default_factory=dict)
    """Lots that still hold points."""
    balance_seq: int = -1
    """Seq of the entry or change `current`/`promised` come from."""
    current: Decimal = ZERO
    promised: Decimal = ZERO
    change_seq: int | None = None
    """Seq of the last balance change applied; None until one is seen."""
    lifetime_earned: Decimal | None = None
    redeemed: Decimal | None = None
    expired: Decimal | None = None
    returned: Decimal | None = None
    tier: str | None = None
    updated_at: datetime | None = None
    """Event time of the newest record applied (what the customer last saw change)."""
    pending: Pending = field(default_factory=Pending, compare=False)

    # Redis hash form ----------------------------------------------------------------------------------------
    def to_hash(self) -> dict[str, str]:
        values: dict[str, str | None] = {
            "program_id": self.program_id, "customer_id": self.customer_id, "seq": str(self.seq),
            "debt": _num(self.debt), "balance_seq": str(self.balance_seq), "current": _num(self.current),
            "promised": _num(self.promised),
            "change_seq": None if self.change_seq is None else str(self.change_seq),
            "lifetime_earned": None if self.lifetime_earned is None else _num(self.lifetime_earned),
            "redeemed": None if self.redeemed is None else _num(self.redeemed),
            "expired": None if self.expired is None else _num(self.expired),
            "returned": None if self.returned is None else _num(self.returned),
            "tier": self.tier, "updated_at": _iso(self.updated_at),
        }
        return {k: v for k, v in values.items() if v is not None}

    @classmethod
    def from_redis(cls, program_id: str, customer_id: str, bal: dict[str, str],
                   lots: dict[str, str] | None = None) -> CustomerView:
        view = cls(program_id=program_id, customer_id=customer_id)
        if bal:
            change_seq = bal.get("change_seq")
            view.seq = int(bal.get("seq", 0))
            view.debt = Decimal(bal.get("debt", "0"))
            view.balance_seq = int(bal.get("balance_seq", -1))
            view.current = Decimal(bal.get("current", "0"))
            view.promised = Decimal(bal.get("promised", "0"))
            view.change_seq = None if change_seq is None else int(change_seq)
            view.lifetime_earned = _dec(bal.get("lifetime_earned"))
            view.redeemed = _dec(bal.get("redeemed"))
            view.expired = _dec(bal.get("expired"))
            view.returned = _dec(bal.get("returned"))
            view.tier = bal.get("tier")
            view.updated_at = _time(bal.get("updated_at"))
        view.lots = {lot_id: LotView.from_json(raw) for lot_id, raw in (lots or {}).items()}
        return view

    # Derived -------------------------------------------------------------------------------------------------
    def held(self) -> tuple[Decimal, Decimal]:
        """(current, promised) as the lots say: equal to the last entry's balances when nothing was missed."""
        current = sum((lot.remaining for lot in self.lots.values() if not lot.promised), ZERO) - self.debt
        promised = sum((lot.remaining for lot in self.lots.values() if lot.promised), ZERO)
        return current, promised

    def consistent(self) -> bool:
        """The lots reconcile with the balances of the last entry applied (a self-check after each batch)."""
        return self.balance_seq != self.seq or self.held() == (self.current, self.promised)

    def expiration_groups(self, zone: tzinfo | None = None) -> dict[date, Decimal]:
        """Points per last usable local day, promised points included (they expire on the same clock)."""
        groups: dict[date, Decimal] = defaultdict(lambda: ZERO)
        for lot in self.lots.values():
            if lot.expires_at is not None and lot.remaining > ZERO:
                groups[last_usable_day(lot.expires_at, zone)] += lot.remaining
        return dict(sorted(groups.items()))

    def promised_groups(self) -> list[tuple[datetime | None, str | None, Decimal]]:
        """Promised points by (available at, bill), in the order they become current."""
        groups: dict[tuple[datetime | None, str | None], Decimal] = defaultdict(lambda: ZERO)
        for lot in self.lots.values():
            if lot.promised and lot.remaining > ZERO:
                groups[(lot.available_at, lot.bill_number)] += lot.remaining
        return sorted(((at, bill, points) for (at, bill), points in groups.items()),
                      key=lambda row: (row[0] is None, row[0].astimezone(UTC) if row[0] else _EPOCH, row[1] or ""))

    def _touch(self, at: datetime) -> None:
        if self.updated_at is None or at >= self.updated_at:
            self.updated_at = at


# Transitions ----------------------------------------------------------------------------------------------------
def apply_ledger(view: CustomerView, entry: LedgerEntry, zone: tzinfo | None = None) -> bool:
    """Apply one ledger entry; False when it was applied before (seq not newer)."""
    if entry.seq <= view.seq:
        return False
    view.seq = entry.seq
    if entry.seq >= view.balance_seq:
        view.balance_seq, view.current, view.promised = entry.seq, entry.balance_after, entry.promised_after
    if entry.lot_id is not None:
        _move_lot(view, entry)
    view._touch(entry.occurred_at)
    view.pending.balance = True
    view.pending.history.append((entry.seq, entry.entry_id, history_json(entry, zone)))
    return True


def _settle_debt(view: CustomerView, lot: LotView) -> None:
    """The engine pays debt from the next current points, before their lot keeps them."""
    if view.debt > ZERO and lot.remaining > ZERO:
        paid = min(view.debt, lot.remaining)
        lot.remaining -= paid
        view.debt -= paid


def _move_lot(view: CustomerView, entry: LedgerEntry) -> None:
    lot_id = entry.lot_id
    assert lot_id is not None
    lot = view.lots.get(lot_id)
    if entry.kind is LedgerKind.REDATE:
        # Only the date moves (the engine re-dates lots that hold points; one the view no longer holds has
        # nothing to regroup). Setting a date is idempotent, besides the seq check.
        if lot is not None:
            lot.expires_at = entry.expires_at
            view.pending.lots.add(lot_id)
        return
    if lot is None:  # its credit, or a lot that was empty (a reversal refills it)
        lot = view.lots[lot_id] = LotView(remaining=ZERO, promised=entry.bucket is Bucket.PROMISED,
                                          bill_number=entry.bill_number)
    lot.expires_at, lot.available_at = entry.expires_at, entry.available_at
    kind, amount = entry.kind, entry.amount
    if entry.bucket is Bucket.PROMISED:  # promise, cancellation by a return, expiry of a promised lot
        lot.promised = True
        lot.remaining += amount
    elif kind is LedgerKind.CONVERT:  # the whole lot moves to the current bucket, then pays debt
        lot.promised = False
        _settle_debt(view, lot)
    elif kind is LedgerKind.RETURN:
        # The claim is met from what the lot holds; the rest of `amount` (if any) is new debt.
        claim = -(entry.desired_amount if entry.desired_amount is not None else amount)
        take = max(ZERO, min(claim, lot.remaining))
        lot.remaining -= take
        view.debt += -amount - take
    elif amount > ZERO:  # earn, adjust (add), reverse, reissue
        lot.remaining += amount
        _settle_debt(view, lot)
    else:  # redeem, expire, adjust (deduct)
        lot.remaining += amount
    view.pending.lots.add(lot_id)
    if lot.remaining <= ZERO:
        del view.lots[lot_id]


def apply_balance_change(view: CustomerView, change: BalanceChange) -> bool:
    """Apply one balance change; False when a newer one was applied already."""
    if view.change_seq is not None and change.seq < view.change_seq:
        return False
    view.change_seq = change.seq
    view.lifetime_earned, view.redeemed = change.lifetime_earned, change.redeemed
    view.expired, view.returned, view.tier = change.expired, change.returned, change.tier
    if change.seq >= view.balance_seq:
        view.balance_seq, view.current, view.promised = change.seq, change.current, change.promised
    view._touch(change.occurred_at)
    view.pending.balance = True
    return True


def apply_tier_change(view: CustomerView, change: TierChange) -> bool:
    """Record a tier change. The tier itself comes from balance changes (ordered by seq); a tier change sets it
    only while none is known, e.g. after a rebuild when the customer's balance changes have aged out."""
    if view.change_seq is None and view.tier != change.to_tier:
        view.tier = change.to_tier
        view.pending.balance = True
    view.pending.tier_changes.append((_ms(change.occurred_at), change.change_id, change.model_dump_json().encode()))
    return True


def apply_notification(view: CustomerView, notification: Notification) -> bool:
    view.pending.notifications.append(
        (_ms(notification.occurred_at), notification.notification_id, notification.model_dump_json().encode()))
    return True


def history_json(entry: LedgerEntry, zone: tzinfo | None = None) -> bytes:
    """The stored history item: the entry as published, plus the customer-facing sentence."""
    data: dict[str, Any] = orjson.loads(entry.model_dump_json())
    data["text"] = describe(entry, zone)
    return orjson.dumps(data)
