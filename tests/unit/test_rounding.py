"""Round-off settings: the document's two tables, and the reading of "half down" they imply."""

from __future__ import annotations

from decimal import Decimal

import pytest

from loyalty_stream.engine.core import apply
from loyalty_stream.engine.rounding import RoundingStrategy, quantum, round_down_to, round_points
from tests.unit.conftest import activity, program_from

D = Decimal
S = RoundingStrategy


@pytest.mark.parametrize(("decimals", "issued"), [(0, "50"), (1, "50.3"), (2, "50.35"), (3, "50.346")])
def test_document_table_decimals_with_default_half_up(decimals: int, issued: str) -> None:
    result = round_points(D("50.3458"), decimals)
    assert result == D(issued)
    assert str(result) == issued  # exactly `decimals` places, no more


@pytest.mark.parametrize(
    ("strategy", "issued"),
    [
        (S.CEILING, "25.88"),
        (S.FLOOR, "25.87"),
        (S.HALF_UP, "25.88"),
        (S.HALF_DOWN, "25.87"),
        (S.HALF_EVEN, "25.88"),
    ],
)
def test_document_table_strategies_on_25_8751(strategy: RoundingStrategy, issued: str) -> None:
    assert round_points(D("25.8751"), 2, strategy) == D(issued)


def test_half_down_and_half_even_look_at_the_next_digit_only() -> None:
    # Next digit 5 is "midway" for the document, whatever follows it.
    assert round_points(D("25.8751"), 2, S.HALF_DOWN) == D("25.87")
    assert round_points(D("25.8651"), 2, S.HALF_EVEN) == D("25.86")  # 6 is even: stays
    assert round_points(D("25.8751"), 2, S.HALF_EVEN) == D("25.88")  # 7 is odd: goes to 8
    # Next digit other than 5 rounds to the nearest as usual.
    assert round_points(D("25.8761"), 2, S.HALF_DOWN) == D("25.88")
    assert round_points(D("25.8749"), 2, S.HALF_DOWN) == D("25.87")
    # Half-up is the textbook one.
    assert round_points(D("25.8749"), 2, S.HALF_UP) == D("25.87")
    assert round_points(D("25.875"), 2, S.HALF_UP) == D("25.88")


def test_ceiling_and_floor_use_the_exact_value() -> None:
    assert round_points(D("25.8701"), 2, S.CEILING) == D("25.88")
    assert round_points(D("25.8799"), 2, S.FLOOR) == D("25.87")
    assert round_points(D("25.87"), 2, S.CEILING) == D("25.87")


def test_negative_amounts_round_symmetrically_for_half_strategies() -> None:
    assert round_points(D("-25.8751"), 2, S.HALF_DOWN) == D("-25.87")
    assert round_points(D("-25.8751"), 2, S.HALF_UP) == D("-25.88")
    assert round_points(D("-25.871"), 2, S.CEILING) == D("-25.87")
    assert round_points(D("-25.871"), 2, S.FLOOR) == D("-25.88")


def test_default_is_three_decimals_half_up_and_decimals_are_bounded() -> None:
    assert round_points(D("1.23456")) == D("1.235")
    with pytest.raises(ValueError, match="0-3"):
        round_points(D("1"), 4)
    assert quantum(0) == D(1) and quantum(3) == D("0.001")
    assert round_down_to(D("9.999"), 2) == D("9.99")


def test_every_issued_amount_goes_through_the_program_rounding() -> None:
    program = program_from(
        {
            "rounding": {"decimals": 2, "strategy": "half_down"},
            "earn_conditions": [{"code": "PCT", "allocation": {"type": "prorated", "percent": "0.25875"}}],
            "rule_sets": {
                "TransactionAdd": [
                    {
                        "name": "s",
                        "rules": [{"name": "r", "actions": [{"type": "allocate", "condition": "PCT"}]}],
                    }
                ]
            },
        }
    )
    # 0.25875 % of 10000 = 25.875: the midway case, half-down keeps 25.87
    outcome = apply(
        None,
        activity("TransactionAdd", "t1", "2024-01-01T10:00:00Z", bill_number="B", amount="10000"),
        program,
    )
    assert [e.amount for e in outcome.ledger] == [D("25.87")]
    assert str(outcome.ledger[0].amount) == "25.87"
