"""The engine's hot records write their `__init__` out (mypyc compiles it; a dataclass-generated one would run
interpreted). These tests keep each written-out `__init__` in step with the dataclass fields it replaces:
every field accepted by name, and every default the field declares."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from bench import workload
from loyalty_stream.engine.caps import AmountCap
from loyalty_stream.engine.effects import Outcome
from loyalty_stream.engine.line_items import Unit
from loyalty_stream.engine.state import Bill, BillItem, Consumption, CustomerState, Lot, Redemption
from loyalty_stream.stream.processor import ActivityProcessor, decode_state

from .conftest import states_after

FIXED_NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _busy_state() -> CustomerState:
    """A real customer state with lots, bills and redemptions, as the engine leaves it."""
    registry = workload.load_registry()
    processor = ActivityProcessor(registry, clock=lambda: FIXED_NOW)
    store = states_after(processor, workload.generate(600, 12, seed=3, days=60))
    states = [decode_state(raw) for raw in store.values()]
    return max(states, key=lambda s: (len(s.redemptions) > 0, len(s.bills), len(s.lots)))


def _samples() -> list[Any]:
    state = _busy_state()
    assert state.lots and state.bills and state.redemptions
    bill = next(iter(state.bills.values()))
    redemption = next(r for r in state.redemptions.values() if r.consumed)
    return [
        state, state.lots[0], bill, next(iter(bill.items.values())), redemption, redemption.consumed[0],
        Outcome(state), Unit(None, Decimal("12.50")),
        AmountCap("k", Decimal(3), {None: Decimal(1)}),
    ]


SAMPLES = _samples()


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: type(r).__name__)
def test_every_field_is_accepted_by_name(record: Any) -> None:
    assert dataclasses.replace(record) == record
    names = [f.name for f in dataclasses.fields(record)]
    assert all(hasattr(record, name) for name in names)


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: type(r).__name__)
def test_every_declared_default_holds(record: Any) -> None:
    required = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)
                if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    fresh = type(record)(**required)
    for f in dataclasses.fields(record):
        if f.name in required or not f.init:
            continue
        expected = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        assert getattr(fresh, f.name) == expected, f.name


def test_lots_made_with_the_same_values_are_equal_and_independent() -> None:
    lot = next(s for s in SAMPLES if isinstance(s, Lot))
    again = dataclasses.replace(lot, remaining=lot.remaining)
    assert again == lot and again is not lot
    state = next(s for s in SAMPLES if isinstance(s, CustomerState))
    one, two = CustomerState(state.customer_id, state.program_id), CustomerState(state.customer_id, state.program_id)
    one.lots.append(lot)
    assert two.lots == [] and one.counters is not two.counters  # no shared mutable defaults
    assert isinstance(Bill("b", "e", FIXED_NOW, Decimal(1)).items, dict)
    assert BillItem("i", "s", Decimal(1), Decimal(1)).returned_amount == 0
    assert Redemption("r", "e", FIXED_NOW, Decimal(1), None).consumed == []
    assert Consumption("l", Decimal(1)).points == 1
