"""The stored form of a customer round-trips exactly (lots, bills, redemptions, counters)."""

from __future__ import annotations

from loyalty_stream.engine.core import apply
from loyalty_stream.engine.state import state_from_dict, state_to_dict
from loyalty_stream.program.model import Program

from .conftest import activity


def test_round_trip_after_activity(default_program: Program) -> None:
    state = None
    for i, kind in enumerate(["Registration", "TransactionAdd", "PointsRedemption"]):
        payload = {"TransactionAdd": {"bill_number": "B1", "amount": "1234.5",
                                      "line_items": [{"item_id": "1", "sku": "S", "amount": "1234.5"}]},
                   "PointsRedemption": {"points": "60"}}.get(kind, {})
        outcome = apply(state, activity(kind, f"e{i}", f"2026-01-0{i + 1}T10:00:00+00:00", **payload),
                        default_program)
        state = outcome.state
    assert state is not None and state.redemptions and state.bills and state.lots
    data = state_to_dict(state)
    assert state_from_dict(data) == state
    assert state_to_dict(state_from_dict(data)) == data
