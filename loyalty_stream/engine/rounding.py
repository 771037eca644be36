"""Exact point arithmetic: every amount the engine issues, returns, adjusts or redeems passes through here.

Points are `Decimal`s; binary floats never enter. The program chooses decimals (0-3) and one of five
strategies; the vendor document's tables (50.3458, 25.8751) are the tests.
"""

from __future__ import annotations

from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Decimal,
)
from enum import StrEnum
from functools import lru_cache

ZERO = Decimal(0)


class RoundingStrategy(StrEnum):
    CEILING = "ceiling"
    FLOOR = "floor"
    HALF_UP = "half_up"
    HALF_DOWN = "half_down"
    HALF_EVEN = "half_even"


_DECIMAL_MODES = {
    RoundingStrategy.CEILING: ROUND_CEILING,
    RoundingStrategy.FLOOR: ROUND_FLOOR,
    RoundingStrategy.HALF_UP: ROUND_HALF_UP,
    RoundingStrategy.HALF_DOWN: ROUND_HALF_DOWN,
    RoundingStrategy.HALF_EVEN: ROUND_HALF_EVEN,
}


@lru_cache(maxsize=8)
def _quantum(decimals: int) -> Decimal:
    return Decimal(1).scaleb(-decimals)


def round_points(value: Decimal, decimals: int = 3, strategy: RoundingStrategy = RoundingStrategy.HALF_UP) -> Decimal:
    """Round `value` to `decimals` places with `strategy` (Python's modes match the document's five)."""
    if not 0 <= decimals <= 3:
        raise ValueError(f"decimals must be 0-3, got {decimals}")
    return value.quantize(_quantum(decimals), rounding=_DECIMAL_MODES[strategy])


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
