"""Exact point arithmetic: every amount the engine issues, returns, adjusts or redeems passes through here.

Points are `Decimal`s; binary floats never enter. The program chooses decimals (0-3) and one of five
strategies; the vendor document's tables (50.3458, 25.8751) are the tests.

How the half-* strategies decide "midway" (a deliberate reading of the document)
--------------------------------------------------------------------------------
The document defines them by *the next digit*: half-up "rounds up when the next digit is five or more",
half-down rounds down "if the decimal is 5 (midway)", half-even goes to the even neighbour "when the next
digit is exactly five". Its table applies that literally: 25.8751 to two decimals under half-down gives
25.87 because the next digit is 5, although 25.8751 is above the true midpoint (Python's ROUND_HALF_DOWN,
and Java's HALF_DOWN, give 25.88). So for the three half-* strategies the engine looks at the first
discarded digit only: it first truncates (toward zero) to `decimals + 1` places, then applies the mode.

* half-up is unchanged by this (a next digit of 5 rounds up either way), so the default is the textbook one;
* half-down and half-even differ from the textbook only when the next digit is 5 and later digits are
  non-zero (25.8751 -> 25.87 half-down; 25.8651 -> 25.86 half-even);
* ceiling and floor look at the exact value (they have no midpoint): 25.8701 ceils to 25.88.

Negative amounts (debits) round symmetrically for the half-* strategies: the truncation is toward zero and
the tie-breaking is on the magnitude; ceiling/floor keep their signed meaning (toward +/- infinity).
"""

from __future__ import annotations

from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Decimal,
)
from enum import StrEnum
from typing import Final

ZERO: Final = Decimal(0)


class RoundingStrategy(StrEnum):
    CEILING = "ceiling"
    FLOOR = "floor"
    HALF_UP = "half_up"
    HALF_DOWN = "half_down"
    HALF_EVEN = "half_even"


_DECIMAL_MODES: Final = {
    RoundingStrategy.CEILING: ROUND_CEILING,
    RoundingStrategy.FLOOR: ROUND_FLOOR,
    RoundingStrategy.HALF_UP: ROUND_HALF_UP,
    RoundingStrategy.HALF_DOWN: ROUND_HALF_DOWN,
    RoundingStrategy.HALF_EVEN: ROUND_HALF_EVEN,
}
_NEXT_DIGIT_ONLY: Final = frozenset({RoundingStrategy.HALF_DOWN, RoundingStrategy.HALF_EVEN})
_POWERS: Final = {exponent: Decimal(1).scaleb(exponent) for exponent in range(-30, 1)}
_PROBES: Final = tuple((exponent, _POWERS[exponent]) for exponent in (-2, 0, -1, -3))
"""The usual exponents of points (2 decimals, whole points, 1 or 3 decimals), most frequent first."""
CENTS: Final = _POWERS[-2]


def quantum(decimals: int) -> Decimal:
    """The smallest issuable amount at `decimals` places (1, 0.1, 0.01, 0.001)."""
    return _POWERS[-decimals]


def exponent_of(value: Decimal) -> int:
    """`value.as_tuple().exponent`, tried first against the usual exponents: `same_quantum` is a plain C test,
    while `as_tuple` builds a digit tuple and a named tuple (several times slower)."""
    for usual, probe in _PROBES:
        if value.same_quantum(probe):
            return usual
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return exponent


def power_of_ten(exponent: int) -> Decimal:
    """`Decimal(1).scaleb(exponent)`, the usual ones made once."""
    power = _POWERS.get(exponent)
    return power if power is not None else Decimal(1).scaleb(exponent)


def round_points(
    value: Decimal, decimals: int = 3, strategy: RoundingStrategy = RoundingStrategy.HALF_UP
) -> Decimal:
    """Round `value` to exactly `decimals` places with `strategy`, as the document defines it (see module)."""
    return rounder(decimals, strategy).round(value)


class Rounder:
    """`round_points` for one (decimals, strategy), its lookups done once (`rounder`): the engine rounds with
    the program's rounding several times per activity, and a `RoundingStrategy` hashes in Python (an Enum).
    A plain class (not a named tuple): mypyc makes it native, so `round` is a direct call."""

    __slots__ = ("mode", "quantum", "truncate_to")

    def __init__(self, truncate_to: Decimal | None, quantum: Decimal, mode: str) -> None:
        self.truncate_to = truncate_to
        """The half-down / half-even first step: truncate to one more place (None for the other strategies)."""
        self.quantum = quantum
        self.mode = mode

    def round(self, value: Decimal) -> Decimal:
        truncate_to = self.truncate_to
        if truncate_to is not None:
            value = value.quantize(truncate_to, ROUND_DOWN)  # (positional: no keyword parsing in Decimal)
        return value.quantize(self.quantum, self.mode)


def rounder(decimals: int, strategy: RoundingStrategy) -> Rounder:
    """The `Rounder` of `round_points(value, decimals, strategy)`."""
    if not 0 <= decimals <= 3:
        raise ValueError(f"decimals must be 0-3, got {decimals}")
    truncate_to = quantum(decimals + 1) if strategy in _NEXT_DIGIT_ONLY else None
    return Rounder(truncate_to, quantum(decimals), _DECIMAL_MODES[strategy])


def round_down_to(value: Decimal, decimals: int) -> Decimal:
    """Floor to `decimals` places: what a cap allows may never be rounded up past the cap."""
    return value.quantize(quantum(decimals), ROUND_FLOOR)


def to_decimal(value: object) -> Decimal:
    """Coerce ints, decimal strings and Decimals; reject floats so no binary fraction sneaks in."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise TypeError("a boolean is not an amount")
    if isinstance(value, int | str):
        return Decimal(value)
    raise TypeError(f"not an exact amount: {value!r}")


def normalize(value: Decimal) -> Decimal:
    """Canonical form for equality in serialised output: no exponent, no trailing zeros past the point."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()
