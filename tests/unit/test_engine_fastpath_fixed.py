"""Fast paths of the engine's fixed per-activity cost give exactly what the plain computation gives.

`Effects` looks the program's facts up once and rounds with a `Rounder` built once per program; ledger entries
and balance changes are filled into a copy of a full field dict instead of a literal.
"""

from __future__ import annotations

import itertools
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest

from loyalty_stream.engine import effects as effects_module
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.facts import facts
from loyalty_stream.engine.rounding import _DECIMAL_MODES, _QUANTA, RoundingStrategy, round_points, rounder
from loyalty_stream.engine.state import new_state
from loyalty_stream.events.outputs import BalanceChange, LedgerEntry

from .conftest import activity
from .test_redeem import make_program

D = Decimal

VALUES = [D(v) for v in ("0", "1", "-1", "25.8751", "25.8651", "-25.8751", "50.3458", "0.005", "0.0049", "0.015",
                         "-0.015", "2.5", "3.5", "-2.5", "99.9999", "123456.78951", "1E+3", "7.12345678901234567")]


def plain_round(value: Decimal, decimals: int, strategy: RoundingStrategy) -> Decimal:
    """The document's rounding written out (see engine.rounding): half-down / half-even look at the next digit."""
    if strategy in (RoundingStrategy.HALF_DOWN, RoundingStrategy.HALF_EVEN):
        value = value.quantize(Decimal(1).scaleb(-(decimals + 1)), rounding=ROUND_DOWN)
    return value.quantize(Decimal(1).scaleb(-decimals), rounding=_DECIMAL_MODES[strategy])


@pytest.mark.parametrize(("decimals", "strategy"), list(itertools.product(range(4), RoundingStrategy)))
def test_rounder_matches_plain_rounding(decimals: int, strategy: RoundingStrategy) -> None:
    fast = rounder(decimals, strategy)
    for value in VALUES:
        expected = plain_round(value, decimals, strategy)
        for got in (fast.round(value), round_points(value, decimals, strategy)):
            assert str(got) == str(expected), (value, decimals, strategy)
    assert (fast.truncate_to is not None) == (strategy in (RoundingStrategy.HALF_DOWN, RoundingStrategy.HALF_EVEN))
    assert fast.quantum == _QUANTA[decimals]


def test_rounder_refuses_what_round_points_refused() -> None:
    for decimals in (-1, 4):
        with pytest.raises(ValueError, match="decimals must be 0-3"):
            rounder(decimals, RoundingStrategy.HALF_UP)
        with pytest.raises(ValueError, match="decimals must be 0-3"):
            round_points(D(1), decimals)


@pytest.mark.parametrize("strategy", list(RoundingStrategy))
def test_effects_round_uses_the_programs_rounding(strategy: RoundingStrategy) -> None:
    program = make_program(rounding={"decimals": 1, "strategy": strategy.value})
    event = activity("TransactionAdd", "t1", "2024-10-01T10:00:00+00:00", bill_number="B1", amount="10")
    fx = Effects(new_state("c1", "default"), event, program, None)
    assert fx.known is facts(program)
    for value in VALUES:
        assert str(fx.round(value)) == str(round_points(value, 1, strategy))


def test_effects_facts_follow_a_copied_program() -> None:
    """A copy shares `compiled` but gets its own facts (its rounding may differ)."""
    program = make_program()
    facts(program)
    copy = program.model_copy(update={"rounding": program.rounding.model_copy(update={"decimals": 0})})
    event = activity("TransactionAdd", "t1", "2024-10-01T10:00:00+00:00", bill_number="B1", amount="10")
    fx = Effects(new_state("c1", "default"), event, copy, None)
    assert fx.known.program is copy
    assert str(fx.round(D("2.5"))) == "3"


# Ledger entries and balance changes --------------------------------------------------------------------------
def test_templates_name_every_field_in_order() -> None:
    for template, contract in ((effects_module._ENTRY, LedgerEntry), (effects_module._BALANCE_CHANGE, BalanceChange)):
        assert list(template) == list(contract.model_fields)
        assert template["type"] == contract.__name__
        assert all(value is None for name, value in template.items() if name != "type")


def _outcomes() -> list[Any]:
    program = make_program()
    state = None
    outcomes = []
    for kind, when, payload in [
        ("TransactionAdd", "2024-10-01T10:00:00+00:00", {"bill_number": "B1", "amount": "120.50"}),
        ("PointsRedemption", "2024-10-02T10:00:00+00:00", {"points": "5"}),
        ("TransactionAdd", "2024-10-03T10:00:00+00:00", {"bill_number": "B2", "amount": "7"}),
    ]:
        outcome = apply(state, activity(kind, f"e{len(outcomes)}", when, **payload), program)
        state = outcome.state
        outcomes.append(outcome)
    return outcomes


def test_entries_and_balance_changes_validate_as_built_by_hand() -> None:
    """Every field is set (a field left at the template's None would fail validation or differ), and the
    result equals and serialises exactly as the validated model."""
    outcomes = _outcomes()
    entries = [entry for outcome in outcomes for entry in outcome.ledger]
    changes = [outcome.balance_change for outcome in outcomes]
    assert entries and all(change is not None for change in changes)
    for built in [*entries, *changes]:
        assert built is not None
        validated = type(built).model_validate(built.model_dump())
        assert validated == built
        assert validated.model_dump_json() == built.model_dump_json()
        assert list(built.__dict__) == list(type(built).model_fields)
    # Each instance has its own field dict (the template is copied, never shared or changed).
    assert len({id(entry.__dict__) for entry in entries}) == len(entries)
    assert all(value is None for name, value in effects_module._ENTRY.items() if name != "type")
