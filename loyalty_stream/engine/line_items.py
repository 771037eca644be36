"""Line-item allocation: which parts of a bill an allocation earns on, and exact splitting of points.

`distribute` is the one place points are split (items of a bill, cap usage over lots): shares are whole
multiples of a quantum that add up *exactly* to the total, by the largest-remainder method in integer
arithmetic (ties go to the earlier item), so splitting never creates or loses a point whatever the rounding
strategy, and the same inputs always give the same shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.rounding import exponent_of, power_of_ten
from loyalty_stream.engine.state import ZERO
from loyalty_stream.events.activities import LineItem, TransactionPayload
from loyalty_stream.program.rules import LineItemOptions

ONE: Final = Decimal(1)


@dataclass(slots=True)
class Unit:
    """What one lot is earned on: the whole bill (item None) or one line item, and its eligible amount."""

    item_id: str | None
    amount: Decimal
    item: LineItem | None = None

    def __init__(self, item_id: str | None, amount: Decimal, item: LineItem | None = None) -> None:
        # Written out: under mypyc an explicit __init__ is compiled, the dataclass-generated one runs interpreted.
        self.item_id = item_id
        self.amount = amount
        self.item = item


ItemRow = tuple[str, Decimal, LineItem, str, "str | None"]
"""A line item's (item_id, amount, item, sku, category): its fields the earn path reads, read once."""

_ROWS_KEY: Final = "earn_item_rows"


def item_rows(payload: TransactionPayload) -> list[ItemRow]:
    return [(item.item_id, item.amount, item, item.sku, item.category) for item in payload.line_items]


def item_rows_of(fx: Effects, payload: TransactionPayload) -> list[ItemRow]:
    """`item_rows(payload)` once per activity (kept in its memo with the payload it is for): the bill, every
    action earning on line items and the tracker cap read the items' fields from it (an attribute read of a
    pydantic model is a generic lookup)."""
    memo = fx.memo_for()
    known: tuple[TransactionPayload, list[ItemRow]] | None = memo.get(_ROWS_KEY)
    if known is not None and known[0] is payload:
        return known[1]
    rows = item_rows(payload)
    memo[_ROWS_KEY] = (payload, rows)
    return rows


def units_for(options: LineItemOptions | None, filtered: bool, payload: TransactionPayload | None,
              rows: list[ItemRow] | None = None) -> list[Unit]:
    """The units an allocate action with line-item `options` earns on (before caps), in bill order; empty when
    a filter matches nothing. `filtered` is `options.filtered` (the action's plan keeps it: `earn.ActionPlan`);
    `rows` are the payload's `item_rows` when the caller has them."""
    if payload is None:
        return [Unit(None, ZERO)]
    if options is not None and rows is None:
        rows = item_rows(payload)
    if options is None or not rows:
        return [] if filtered else [Unit(None, payload.amount)]
    if not filtered:
        return [Unit(row[0], row[1], row[2]) for row in rows]
    sku_in, category_in = options.sku_in, options.category_in
    return [
        Unit(row[0], row[1], row[2]) for row in rows
        if (sku_in is None or row[3] in sku_in) and (category_in is None or row[4] in category_in)
    ]


def tender_amounts(payload: TransactionPayload, modes: Sequence[str]) -> Decimal:
    # A loop, not `sum(<generator>, ZERO)`: the same additions, without a generator object and a generic call.
    total = ZERO
    for tender in payload.tenders:
        if tender.mode in modes:
            total += tender.amount
    return total


def tender_fraction(payload: TransactionPayload, modes: Sequence[str]) -> Decimal:
    """Tender unroller: the share of the bill paid with `modes` (at most all of it; 0 for a 0 bill)."""
    if payload.amount <= ZERO:
        return ZERO
    return min(ONE, tender_amounts(payload, modes) / payload.amount)


def _scaled_ints(weights: Sequence[Decimal]) -> list[int]:
    """Non-negative weights as integers with the same ratios (exact: each weight's integer ratio brought to
    the common denominator, never divided); negative weights count as 0."""
    nums: list[int] = []
    dens: list[int] = []
    common = 1
    for weight in weights:
        if weight > ZERO:
            num, den = weight.as_integer_ratio()
            # `lcm(*dens)` built up pairwise, with Euclid's gcd in native ints and only when `den` adds a
            # factor (equal or dividing denominators are common): the same least common multiple without a
            # list, a star call or a call of `math.lcm` per weight.
            if common % den:
                a, b = common, den
                while b:
                    a, b = b, a % b
                common = common // a * den
        else:
            num, den = 0, 1
        nums.append(num)
        dens.append(den)
    for position in range(len(nums)):
        den = dens[position]
        if den != common:
            nums[position] = nums[position] * (common // den)
    return nums


class _Quantum:
    """The last quantum `distribute` split in and its integer ratio (callers pass one quantum object over
    and over: `rounding.quantum` keeps them), so a total's count of quanta needs no Decimal division."""

    __slots__ = ("den", "num", "quantum")

    def __init__(self) -> None:
        self.quantum: Decimal | None = None
        self.num = 1
        self.den = 1


_LAST_QUANTUM: Final = _Quantum()


def _units(total: Decimal, quantum: Decimal) -> int:
    """`total / quantum` as an int; ValueError when the quotient is not whole.

    Integer ratios instead of a Decimal quotient for the usual case (a positive quantum, a whole quotient of
    fewer than 27 digits, which the Decimal division gives exactly, so the same int); anything else takes
    that division, with its rounding to the context's precision, as before."""
    last = _LAST_QUANTUM
    if last.quantum is not quantum:
        num, den = quantum.as_integer_ratio() if quantum.is_finite() else (0, 1)  # (0: the division's path)
        last.quantum, last.num, last.den = quantum, num, den
    if last.num > 0:
        total_num, total_den = total.as_integer_ratio()
        scaled, divisor = total_num * last.den, total_den * last.num
        units = scaled // divisor
        if units < _EXACT_BELOW and units * divisor == scaled:
            return units
    units, whole_units = (total / quantum).as_integer_ratio()
    if whole_units != 1:
        raise ValueError(f"{total} is not a multiple of {quantum}")
    return units


_EXACT_BELOW: Final = 10**27


def distribute(total: Decimal, weights: Sequence[Decimal], quantum: Decimal) -> list[Decimal]:
    """Split `total` (a multiple of `quantum`) in proportion to `weights` (all zero: equal shares).

    Shares are multiples of `quantum` summing exactly to `total`; the leftover quanta after flooring go to
    the largest remainders, ties to the earlier position.
    """
    count = len(weights)
    if not count:
        return []
    if total < ZERO:
        return [-share for share in distribute(-total, weights, quantum)]
    units = _units(total, quantum)
    # Shares are `quantum * n` (what `Decimal(n) * quantum` is, without constructing a Decimal per share).
    if count == 1:
        return [quantum * units]  # one weight takes every unit, whatever its value
    ints = _scaled_ints(weights)
    whole = 0
    for weight in ints:
        whole += weight
    if not whole:  # every weight 0 (none is negative): equal shares
        ints = [1] * count
        whole = count
    floors: list[int] = []
    rests: list[int] = []
    leftover = units
    for weight in ints:
        scaled = units * weight
        share = scaled // whole
        floors.append(share)
        rests.append(scaled - share * whole)  # (`scaled % whole`: the divisor is positive)
        leftover -= share
    if leftover:
        if count <= _PICK_LIMIT:
            # Fewer quanta left over than weights (each floor loses less than one): the largest remainder
            # not yet given one, the earlier on a tie (strict `>`), as sorting (-remainder, position) orders.
            for _ in range(leftover):
                best = 0
                for position in range(1, count):
                    if rests[position] > rests[best]:
                        best = position
                floors[best] += 1
                rests[best] = -1
        else:
            order = sorted([(-rests[position], position) for position in range(count)])
            for given in range(leftover):
                floors[order[given % count][1]] += 1
    return [quantum * share for share in floors]


_PICK_LIMIT: Final = 8
"""Up to this many weights the leftover quanta are placed by repeated selection instead of a sort."""


def quantum_of(value: Decimal, finest: Decimal = Decimal("0.0001")) -> Decimal:
    """A quantum fine enough to split `value` exactly: its own last place, or `finest` if coarser."""
    return min(power_of_ten(min(exponent_of(value), 0)), finest)
