"""Line-item allocation: use proportions, maximize point allocation, tender unroller, sku/category filters,
and exact splitting (no point created or lost by rounding)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Outcome
from loyalty_stream.engine.line_items import distribute, quantum_of
from loyalty_stream.events.outputs import LedgerKind
from loyalty_stream.program.model import Program
from tests.unit.conftest import activity, program_from

D = Decimal


def program(
    allocation: dict[str, Any], decimals: int = 2, strategy: str = "half_up", **action: Any
) -> Program:
    return program_from(
        {
            "rounding": {"decimals": decimals, "strategy": strategy},
            "earn_conditions": [{"code": "C", "allocation": allocation}],
            "rule_sets": {
                "TransactionAdd": [
                    {
                        "name": "items",
                        "rules": [
                            {"name": "r", "actions": [{"type": "allocate", "condition": "C", **action}]}
                        ],
                    }
                ]
            },
        }
    )


def item(item_id: str, amount: str, sku: str = "SKU", category: str | None = None) -> dict[str, Any]:
    return {"item_id": item_id, "sku": sku, "amount": amount, "category": category}


def buy(prog: Program, amount: str, items: list[dict[str, Any]], **payload: Any) -> Outcome:
    return apply(
        None,
        activity(
            "TransactionAdd",
            "t1",
            "2024-05-01T10:00:00Z",
            bill_number="B1",
            amount=amount,
            line_items=items,
            **payload,
        ),
        prog,
    )


def per_item(outcome: Outcome) -> dict[str | None, Decimal]:
    return {e.line_item_id: e.amount for e in outcome.ledger if e.kind == LedgerKind.EARN}


def test_use_proportions_300_bill_100_and_200_at_10_percent_gives_10_and_20() -> None:
    prog = program({"type": "prorated", "percent": 10}, line_items={"use_proportions": True})
    outcome = buy(prog, "300", [item("lineitem1", "100"), item("lineitem2", "200")])
    assert per_item(outcome) == {"lineitem1": D(10), "lineitem2": D(20)}
    lots = {lot.line_item_id: lot for lot in outcome.state.lots}
    assert lots["lineitem1"].points == D(10) and lots["lineitem2"].points == D(20)
    assert all(lot.bill_number == "B1" and lot.condition_code == "C" for lot in lots.values())
    assert len({e.lot_id for e in outcome.ledger}) == 2  # a lot per item, so a return claws back exactly
    assert outcome.state.current == D(30)


def test_proportions_split_a_fixed_award_by_item_price() -> None:
    prog = program({"type": "fixed", "points": 15}, line_items={})
    assert per_item(buy(prog, "300", [item("a", "100"), item("b", "200")])) == {"a": D(5), "b": D(10)}


def test_without_proportions_each_item_earns_on_its_own() -> None:
    prog = program({"type": "fixed", "points": 5}, line_items={"use_proportions": False})
    assert per_item(buy(prog, "300", [item("a", "100"), item("b", "200")])) == {"a": D(5), "b": D(5)}
    step = program({"type": "step", "points": 10, "step": 200}, line_items={"use_proportions": False})
    # Each item under 200 completes no step on its own; with proportions the bill's 300 completes one.
    assert per_item(buy(step, "300", [item("a", "150"), item("b", "150")])) == {}
    step_bill = program({"type": "step", "points": 10, "step": 200}, line_items={"use_proportions": True})
    assert per_item(buy(step_bill, "300", [item("a", "150"), item("b", "150")])) == {"a": D(5), "b": D(5)}


def test_rounding_per_item_never_creates_or_loses_points() -> None:
    # 10 points over three equal items: 3.33 + 3.33 + 3.34 (the leftover cent to the first largest remainder).
    prog = program({"type": "fixed", "points": 10}, line_items={})
    outcome = buy(prog, "30", [item("a", "10"), item("b", "10"), item("c", "10")])
    assert per_item(outcome) == {"a": D("3.34"), "b": D("3.33"), "c": D("3.33")}
    assert sum(per_item(outcome).values()) == D(10)
    # Whole points: 10 % of 3 x 5 = 1.5 -> rounds to 2 for the bill; the items share 2, not 3 x 1 (or 3 x 0).
    whole = program({"type": "prorated", "percent": 10}, decimals=0, line_items={})
    outcome = buy(whole, "15", [item("a", "5"), item("b", "5"), item("c", "5")])
    assert per_item(outcome) == {"a": D(1), "b": D(1)}
    assert outcome.state.current == D(2)


def test_largest_remainder_goes_to_the_item_that_lost_most() -> None:
    prog = program({"type": "prorated", "percent": 10}, decimals=0, line_items={})
    # Exact shares 1.7, 2.6, 0.7 of a 5-point total: floors 1, 2, 0; leftovers go to 1.7 (.7) and 0.7 (.7).
    outcome = buy(prog, "50", [item("a", "17"), item("b", "26"), item("c", "7")])
    assert per_item(outcome) == {"a": D(2), "b": D(2), "c": D(1)}


def test_floor_strategy_keeps_items_summing_to_the_floored_total() -> None:
    prog = program(
        {"type": "prorated", "percent": 10},
        decimals=0,
        strategy="floor",
        line_items={"use_proportions": False},
    )
    outcome = buy(prog, "57", [item("a", "19"), item("b", "19"), item("c", "19")])
    # exact 1.9 each = 5.7 -> floor 5; largest remainders tie -> the earlier items get the extra point.
    assert per_item(outcome) == {"a": D(2), "b": D(2), "c": D(1)}


def test_maximize_point_allocation_caps_the_action() -> None:
    prog = program({"type": "prorated", "percent": 10}, line_items={"max_points": 25})
    outcome = buy(prog, "300", [item("a", "100"), item("b", "200")])
    assert per_item(outcome) == {"a": D("8.33"), "b": D("16.67")}
    entries = {e.line_item_id: e for e in outcome.ledger}
    assert entries["a"].desired_amount == D(10) and entries["b"].desired_amount == D(20)
    assert outcome.state.current == D(25)


def test_sku_and_category_filters() -> None:
    items = [
        item("a", "100", sku="MILK", category="dairy"),
        item("b", "200", sku="TV", category="electronics"),
        item("c", "50", sku="CHEESE", category="dairy"),
    ]
    by_category = program({"type": "prorated", "percent": 10}, line_items={"category_in": ["dairy"]})
    assert per_item(buy(by_category, "350", items)) == {"a": D(10), "c": D(5)}
    by_sku = program({"type": "prorated", "percent": 10}, line_items={"sku_in": ["TV"]})
    assert per_item(buy(by_sku, "350", items)) == {"b": D(20)}
    nothing = program({"type": "fixed", "points": 5}, line_items={"sku_in": ["NONE"]})
    assert buy(nothing, "350", items).ledger == []
    # A filtered action on a bill without items earns nothing; an unfiltered one earns at bill level.
    assert buy(by_sku, "350", []).ledger == []
    bill_level = program({"type": "prorated", "percent": 10}, line_items={})
    assert per_item(buy(bill_level, "350", [])) == {None: D(35)}


def test_tender_unroller_earns_only_on_the_amount_paid_with_the_modes() -> None:
    prog = program({"type": "prorated", "percent": 10}, tender_modes=["ABC_CREDIT_CARD"])
    tenders = [{"mode": "ABC_CREDIT_CARD", "amount": "600"}, {"mode": "CASH", "amount": "400"}]
    assert per_item(buy(prog, "1000", [], tenders=tenders)) == {None: D(60)}
    assert buy(prog, "1000", [], tenders=[{"mode": "CASH", "amount": "1000"}]).ledger == []
    assert buy(prog, "1000", []).ledger == []  # no tenders at all: nothing paid with the mode


def test_tender_unroller_with_line_items_spreads_the_payment_over_items() -> None:
    prog = program({"type": "prorated", "percent": 10}, line_items={}, tender_modes=["ABC_CREDIT_CARD"])
    tenders = [{"mode": "ABC_CREDIT_CARD", "amount": "150"}, {"mode": "CASH", "amount": "150"}]
    outcome = buy(prog, "300", [item("a", "100"), item("b", "200")], tenders=tenders)
    assert per_item(outcome) == {"a": D(5), "b": D(10)}


def test_fixed_points_with_the_unroller_need_some_payment_with_the_mode() -> None:
    prog = program({"type": "fixed", "points": 7}, tender_modes=["ABC_CREDIT_CARD"])
    tenders = [{"mode": "ABC_CREDIT_CARD", "amount": "1"}, {"mode": "CASH", "amount": "99"}]
    assert per_item(buy(prog, "100", [], tenders=tenders)) == {None: D(7)}


def test_line_items_only_on_transactions_and_round_up_never_split() -> None:
    with pytest.raises(ValueError, match="cannot be split over line items"):
        program(
            {"type": "round_up", "ranges": [{"from_points": 0, "to_points": 10, "round_to": 10}]},
            line_items={},
        )
    with pytest.raises(ValueError, match="apply to TransactionAdd only"):
        program_from(
            {
                "earn_conditions": [{"code": "C", "allocation": {"type": "fixed", "points": 1}}],
                "rule_sets": {
                    "Registration": [
                        {
                            "name": "s",
                            "rules": [
                                {
                                    "name": "r",
                                    "actions": [{"type": "allocate", "condition": "C", "line_items": {}}],
                                }
                            ],
                        }
                    ]
                },
            }
        )


@pytest.mark.parametrize(
    ("total", "weights", "quantum", "shares"),
    [
        ("10", ["1", "1", "1"], "0.01", ["3.34", "3.33", "3.33"]),
        ("1", ["1", "1", "1"], "1", ["1", "0", "0"]),
        ("0.05", ["0", "0"], "0.01", ["0.03", "0.02"]),  # all-zero weights: equal shares
        ("30", ["100", "200"], "1", ["10", "20"]),
        ("-10", ["1", "1", "1"], "0.01", ["-3.34", "-3.33", "-3.33"]),
        ("7", ["0.333", "0.333", "0.334"], "1", ["2", "2", "3"]),
    ],
)
def test_distribute_is_exact(total: str, weights: list[str], quantum: str, shares: list[str]) -> None:
    result = distribute(D(total), [D(w) for w in weights], D(quantum))
    assert result == [D(s) for s in shares]
    assert sum(result) == D(total)


def test_distribute_refuses_a_total_finer_than_its_quantum() -> None:
    with pytest.raises(ValueError, match="not a multiple"):
        distribute(D("1.005"), [D(1)], D("0.01"))
    assert quantum_of(D("10000")) == D("0.0001") and quantum_of(D("12.34567")) == D("0.00001")
