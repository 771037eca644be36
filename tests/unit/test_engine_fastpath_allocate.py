"""`earn.allocate_action` credits what the plain loop credited: one lot per unit with a positive share, keyed by
`(*head, item or "")`, and `desired_amount` on exactly the entries whose share a cap cut (the loop skips the
comparison when the awarded shares are the desired ones)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from loyalty_stream.engine import line_items
from loyalty_stream.engine.earn import allocate_action
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.ids import derive_id
from loyalty_stream.engine.rounding import quantum, rounder
from loyalty_stream.engine.state import ZERO, new_state
from loyalty_stream.program.model import Program
from loyalty_stream.program.rules import AllocateAction
from tests.unit.conftest import activity, program_from

D = Decimal

ITEMS = [
    {"item_id": "1", "sku": "A", "amount": "10.50"},
    {"item_id": "2", "sku": "B", "amount": "3"},
    {"item_id": "3", "sku": "C", "amount": "0"},
    {"item_id": "4", "sku": "D", "amount": "7.25"},
]


def make_program(max_points: str | None, proportional: bool) -> Program:
    options: dict[str, Any] = {"use_proportions": proportional}
    if max_points is not None:
        options["max_points"] = max_points
    return program_from({
        "earn_conditions": [{"code": "PCT", "allocation": {"type": "prorated", "percent": 10}}],
        "rule_sets": {"TransactionAdd": [{"name": "s", "rules": [
            {"name": "r", "actions": [{"type": "allocate", "condition": "PCT", "line_items": options}]},
        ]}]},
    })


def plain_expectation(program: Program, amount: str, items: list[dict[str, Any]], max_points: str | None,
                      proportional: bool) -> list[tuple[str, Decimal, Decimal | None]]:
    """(item id, points, desired_amount) per lot, as the plain computation gives them: shares of the rounded
    points over the items, the max_points cut floored and split again, and `want if want > got else None`."""
    step = quantum(program.rounding.decimals)
    amounts = [D(i["amount"]) for i in items] or [D(amount)]
    exact = [a * D(10) / D(100) for a in amounts]
    rounding = rounder(program.rounding.decimals, program.rounding.strategy)
    desired = rounding.round(sum(amounts, ZERO) * D(10) / D(100) if proportional
                                                else sum(exact, ZERO))
    awarded = desired if max_points is None or desired <= D(max_points) else D(max_points)
    weights = amounts if proportional else exact
    if len(amounts) == 1:
        wanted, got = [desired], [awarded]
    else:
        wanted = line_items.distribute(desired, weights, step)
        got = line_items.distribute(awarded, weights, step)
    ids = [i["item_id"] for i in items] or [""]
    return [(item, g, w if w > g else None) for item, w, g in zip(ids, wanted, got, strict=True) if g > ZERO]


CASES = [
    ("20.75", ITEMS, None, True),
    ("20.75", ITEMS, "1.5", True),  # cut: desired_amount on the items whose share shrank
    ("20.75", ITEMS, "1.5", False),
    ("20.75", ITEMS[:1], None, True),  # one unit, uncut
    ("20.75", ITEMS[:1], "0.5", True),  # one unit, cut
    ("20.75", [], "0.5", True),  # the bill as one unit
    ("20.75", [], None, False),
]


@pytest.mark.parametrize(("amount", "items", "max_points", "proportional"), CASES)
def test_lots_and_desired_amounts_are_the_plain_loops(amount: str, items: list[dict[str, Any]],
                                                     max_points: str | None, proportional: bool) -> None:
    program = make_program(max_points, proportional)
    rule = program.rule_sets["TransactionAdd"][0].rules[0]
    action = rule.actions[0]
    assert isinstance(action, AllocateAction)
    purchase = activity("TransactionAdd", "e1", "2024-05-01T10:00:00+02:00", bill_number="b1", amount=amount,
                        line_items=items)
    fx = Effects(new_state("c1", "default"), purchase, program, None)
    lots = allocate_action(fx, action, rule, purchase, 0, None)
    expected = plain_expectation(program, amount, items, max_points, proportional)
    assert [(lot.line_item_id or "", lot.points) for lot in lots] == [(i, p) for i, p, _ in expected]
    entries = fx.outcome.ledger
    assert [(e.amount, e.desired_amount) for e in entries] == [(p, w) for _, p, w in expected]
    assert [lot.lot_id for lot in lots] == [derive_id("lot", purchase.event_id, "r", "0", "PCT", i)
                                            for i, _, _ in expected]
