"""Returns: claw back the points the returned goods earned, from the lots they created.

How much each lot gives back: a lot earned by a line item follows that item's returned share (by amount, by
quantity for a zero-priced item); a bill-level lot follows the bill's returned share. Shares are cumulative
and kept on `Bill`/`BillItem`, and each return claims `round(points x share_after) - round(points x
share_before)`, so returning a line twice never claws twice and three thirds claw exactly the whole lot.

Where a claim is taken from: promised lots are cancelled first, then current lots give what they still hold.
What they no longer hold was either redeemed or lost (expired, deducted, used to pay a debt). Lost points are
gone anyway and cost nothing more; only the redeemed part beyond what the kept goods earned is a shortfall.
`take_available` forgives it (recorded in the entry's `shortfall`). `allow_negative` charges it to the
balance: from the customer's other current points first (one RETURN entry per lot it comes from, so expiry
never takes those points again), and what is not there becomes a negative balance (`state.debt`, paid off by
the next points). `Lot.shortfall` remembers what was charged or forgiven, so a later reversal of that
redemption neither charges twice nor hands forgiven points back.

Points redeemed to pay for a bill come back when the whole bill has been returned (a partial return keeps
them: points pay for the goods that are kept first): reversed into their lots with the original expiry, or
reissued with a new one, per `return_policy.redeemed_points`. That happens before the claw-back, so a bill
paid with its own points gives them back before they are claimed.

A return of a bill this customer has no purchase of waits for it (`engine.parking`): Kafka orders records only
within a topic, so the purchase may still be on its way.

Lifetime points and lifetime purchases go down by what is claimed and returned, and cap usage is released;
tiers are not downgraded here (tier evaluation only upgrades; a downgrade is a tier-renewal decision).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final, cast

from loyalty_stream.engine import parking, redeem, retention
from loyalty_stream.engine.caps import release_caps
from loyalty_stream.engine.effects import CURRENT, PROMISED, Effects
from loyalty_stream.engine.rounding import normalize
from loyalty_stream.engine.state import ZERO, Bill, BillItem, CustomerState, Lot, Redemption
from loyalty_stream.events import activities as act
from loyalty_stream.events.outputs import LedgerKind

ONE: Final = Decimal(1)
_RETURN: Final = LedgerKind.RETURN  # (Enum members as constants: see `effects.EARN`)


def _n(value: Decimal) -> str:
    return str(normalize(value))


# Returned shares ----------------------------------------------------------------------------------------

def _places(like: Decimal) -> Decimal:
    """Derived money/quantity is kept to the precision of what it derives from (at least 1/100)."""
    exponent = like.as_tuple().exponent
    return Decimal(1).scaleb(min(-2, exponent if isinstance(exponent, int) else -2))


def _derive(value: Decimal, like: Decimal) -> Decimal:
    return value.quantize(_places(like), rounding=ROUND_HALF_EVEN)


def item_share(item: BillItem) -> Decimal:
    if item.amount > ZERO:
        return min(ONE, item.returned_amount / item.amount)
    return min(ONE, item.returned_quantity / item.quantity)


def bill_share(bill: Bill) -> Decimal:
    """Returned share of the bill: from its lines when it has any (their amounts are what came back), else
    from the returned amount."""
    if bill.fully_returned:
        return ONE
    if bill.items:
        total = sum((i.amount for i in bill.items.values()), ZERO)
        if total > ZERO:
            return min(ONE, sum((i.returned_amount for i in bill.items.values()), ZERO) / total)
        quantity = sum((i.quantity for i in bill.items.values()), ZERO)
        return min(ONE, sum((i.returned_quantity for i in bill.items.values()), ZERO) / quantity)
    if bill.amount > ZERO:
        return min(ONE, bill.returned_amount / bill.amount)
    return ZERO


def _return_line(item: BillItem, quantity: Decimal | None, amount: Decimal | None) -> None:
    """Record a returned line: all of what is left by default; quantity and amount derive from each other
    pro rata when only one is given; never more than is left."""
    left_q, left_a = item.quantity - item.returned_quantity, item.amount - item.returned_amount
    if quantity is None and amount is None:
        q, a = left_q, left_a
    elif amount is None:
        q = min(cast(Decimal, quantity), left_q)
        a = left_a if q == left_q else min(left_a, _derive(item.amount * q / item.quantity, item.amount))
    elif quantity is None:
        a = min(amount, left_a)
        if item.amount > ZERO:
            share = _derive(item.quantity * a / item.amount, item.quantity)
            q = left_q if a == left_a else min(left_q, share)
        else:
            q = left_q
    else:
        q, a = min(quantity, left_q), min(amount, left_a)
    item.returned_quantity += max(q, ZERO)
    item.returned_amount += max(a, ZERO)


def _record(bill: Bill, payload: act.TransactionReturnPayload) -> None:
    """Update the bill's returned quantities and amounts (what makes a second return claw only the rest)."""
    if payload.whole_bill:
        for item in bill.items.values():
            _return_line(item, None, None)
    elif payload.line_items:
        for line in payload.line_items:
            _return_line(bill.items[line.item_id], line.quantity, line.amount)
    elif payload.amount is not None:
        if bill.items:  # an amount against an itemised bill: every line gives back the same share of its rest
            left = bill.amount - bill.returned_amount
            ratio = ONE if left <= ZERO else min(ONE, payload.amount / left)
            for item in bill.items.values():
                left_a = item.amount - item.returned_amount
                _return_line(item, None, left_a if ratio == ONE else _derive(left_a * ratio, item.amount))
        else:
            bill.returned_amount = min(bill.amount, bill.returned_amount + payload.amount)
    if payload.whole_bill:
        bill.fully_returned = True
    if bill.items:
        bill.returned_amount = bill.amount if bill_share(bill) == ONE else bill.amount * bill_share(bill)
    bill.fully_returned = bill.fully_returned or bill_share(bill) == ONE
    if bill.fully_returned:
        bill.returned_amount = bill.amount


# TransactionReturn --------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Shares:
    bill: Decimal
    items: dict[str, Decimal]

    @classmethod
    def of(cls, bill: Bill) -> _Shares:
        return cls(bill_share(bill), {k: item_share(i) for k, i in bill.items.items()})

    def of_lot(self, lot: Lot) -> Decimal:
        if lot.line_item_id is not None and lot.line_item_id in self.items:
            return self.items[lot.line_item_id]
        return self.bill


def handle_return(fx: Effects, activity: act.TransactionReturn) -> None:
    payload, state = activity.payload, fx.state
    bill = state.bills.get(payload.bill_number)
    if bill is None:
        # Its purchase may not have arrived yet (another topic): the return waits for it (`parking`). A bill
        # known only from the points that paid for it (bought elsewhere) gets them back now, reversing those
        # redemptions (only the ones still inside the reversal window: the others may already be dropped), and
        # waits only for the claw-back, should the purchase still come.
        paid = [r for r in _redemptions_on(state, payload.bill_number) if retention.reversal_rejection(fx, r) is None]
        if payload.whole_bill and paid:
            _give_back_redeemed(fx, paid, None, payload.bill_number)
            parking.park(fx, applied=True)
            return
        parking.park(fx)
        return
    late = retention.return_rejection(fx, bill)
    if late is not None:
        fx.outcome.rejected = late
        return
    unknown = sorted({line.item_id for line in payload.line_items} - set(bill.items))
    if unknown and not payload.whole_bill:
        fx.outcome.rejected = f"bill {bill.bill_number!r} has no line items {unknown}"
        return
    if bill.fully_returned:
        return  # everything already came back: nothing left to claw (a repeated return is a no-op)
    before, amount_before = _Shares.of(bill), bill.returned_amount
    _record(bill, payload)
    after = _Shares.of(bill)
    state.lifetime_purchases -= bill.returned_amount - amount_before
    if bill.fully_returned:
        _give_back_redeemed(fx, _redemptions_on(state, bill.bill_number), bill, bill.bill_number)
    lots = [lot for lot in state.lots if _earned_by(lot, bill)]
    lots.sort(key=lambda lot: not lot.promised)  # stable: promised first, then current, each in earning order
    spent = redeem.spent_by_lot(state)
    for lot in lots:
        _claw(fx, bill, lot, before.of_lot(lot), after.of_lot(lot), spent.get(lot.lot_id, ZERO))


def _redemptions_on(state: CustomerState, bill_number: str) -> list[Redemption]:
    return sorted((r for r in state.redemptions.values() if r.bill_number == bill_number and not r.reversed),
                  key=lambda r: (r.at, r.redemption_id))


def _give_back_redeemed(fx: Effects, redemptions: list[Redemption], bill: Bill | None,
                        bill_number: str) -> None:
    how = fx.program.return_policy.redeemed_points
    own = {lot.lot_id for lot in fx.state.lots if bill is not None and _earned_by(lot, bill)}
    for redemption in redemptions:
        if how == "reverse":
            redeem.reverse(fx, redemption, f"bill {bill_number} returned")
        elif how == "reissue":
            redeem.reissue(fx, redemption, f"bill {bill_number} returned", own)


def _earned_by(lot: Lot, bill: Bill) -> bool:
    """The lots this purchase created (a reused bill number's older lots are not this bill's)."""
    return (lot.bill_number == bill.bill_number and lot.origin == "earn"
            and lot.source_event_id == bill.event_id)


def _claw(fx: Effects, bill: Bill, lot: Lot, share_before: Decimal, share_after: Decimal,
          spent: Decimal) -> None:
    """Take this lot's share of the return back; see the module docstring for where it comes from."""
    state, policy = fx.state, fx.program.return_policy.shortfall
    claimed_total = fx.round(lot.points * share_after)
    claim = claimed_total - fx.round(lot.points * share_before)
    if claim <= ZERO:
        return
    take = min(claim, lot.remaining)
    fx.take(lot, take)
    short = ZERO
    if not lot.promised:
        # Of the lot, (points - remaining - spent) is lost or already taken: the claim is met from that before
        # it reaches the redeemed part.
        owed = min(spent, max(ZERO, claimed_total - (lot.points - lot.remaining - spent)))
        short = min(claim - take, max(ZERO, owed - lot.shortfall))
        lot.shortfall += short
    lost = claim - take - short
    # allow_negative: the redeemed part is charged to the balance, from the customer's other points first
    # (each lot it comes from gets its own entry, so expiry never takes them again), and only what is not
    # there becomes a negative balance. take_available: forgiven, recorded as the shortfall.
    collect = [] if policy != "allow_negative" or short <= ZERO else redeem.plan_spending(state, short)
    collected = sum((t for _, t in collect), ZERO)
    debt = short - collected if policy == "allow_negative" else ZERO
    state.debt += debt
    state.returned += take + (short if policy == "allow_negative" else ZERO)
    state.lifetime_earned -= claim
    release_caps(state, lot, claim)
    item = f" item {lot.line_item_id}" if lot.line_item_id else ""
    what = f"bill {bill.bill_number}{item} returned"
    notes = []
    if short > ZERO and policy != "allow_negative":
        notes.append(f"{_n(short)} had already been redeemed, not recovered (shortfall)")
    elif short > ZERO:
        how = [f"{_n(collected)} taken from other points"] if collected else []
        how += [f"{_n(debt)} charged as a negative balance"] if debt else []
        notes.append(f"{_n(short)} had already been redeemed: " + " and ".join(how))
    if lost > ZERO:
        notes.append(f"{_n(lost)} had already expired or been deducted")
    amount = -(take + debt)
    bucket = PROMISED if lot.promised else CURRENT
    fx.entry(kind=_RETURN, bucket=bucket, amount=amount,
             key=(bill.bill_number, lot.lot_id), lot=lot, desired_amount=-claim if -claim != amount else None,
             shortfall=short if short > ZERO and policy != "allow_negative" else None,
             reason="; ".join([what, *notes]))
    for other, points in collect:
        fx.take(other, points)
        fx.entry(kind=_RETURN, bucket=CURRENT, amount=-points,
                 key=(bill.bill_number, lot.lot_id, other.lot_id), lot=other, bill_number=bill.bill_number,
                 line_item_id=None, condition_code=None,
                 reason=f"{what}; collects points already redeemed from its own")
