"""What the earn fast paths rely on: `distribute` splits as the sorted largest-remainder method over `lcm`-scaled
integer ratios did (the count of quanta from integer ratios, the last quantum kept by identity, selection
instead of a sort for a few weights, the Decimal division's fallbacks); `earn.action_plan` and the last bill
kept by identity never hand one program's plans or one bill's fields to another; the rule runner builds its
environment on the first condition, from the customer as it was before any action ran."""

from __future__ import annotations

from decimal import Decimal
from math import lcm

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loyalty_stream.engine import earn, line_items, rules
from loyalty_stream.engine.earn import allocate_action
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.line_items import _scaled_ints, distribute
from loyalty_stream.engine.state import ZERO, new_state
from loyalty_stream.events.activities import TransactionAdd
from loyalty_stream.program.expressions import Env
from loyalty_stream.program.model import Program
from loyalty_stream.program.rules import AllocateAction, Rule
from tests.unit.conftest import activity, program_from

D = Decimal


def reference(total: Decimal, weights: list[Decimal], quantum: Decimal) -> list[Decimal]:
    """The split before the fast paths: a Decimal quotient, `lcm(*dens)`, (-remainder, position) sorted."""
    if not weights:
        return []
    if total < ZERO:
        return [-share for share in reference(-total, weights, quantum)]
    units, whole_units = (total / quantum).as_integer_ratio()
    if whole_units != 1:
        raise ValueError(f"{total} is not a multiple of {quantum}")
    if len(weights) == 1:
        return [quantum * units]
    ratios = [w.as_integer_ratio() if w > ZERO else (0, 1) for w in weights]
    common = lcm(*[den for _, den in ratios])
    ints = [num * (common // den) for num, den in ratios]
    if not any(ints):
        ints = [1] * len(weights)
    whole = sum(ints)
    floors = [units * w // whole for w in ints]
    order = sorted((-(units * w % whole), position) for position, w in enumerate(ints))
    for given_ in range(units - sum(floors)):
        floors[order[given_ % len(order)][1]] += 1
    return [quantum * share for share in floors]


weight = st.tuples(st.integers(-30, 10**9), st.integers(-7, 3)).map(lambda p: D(p[0]).scaleb(p[1]))


@given(st.integers(-10**7, 10**7), st.lists(weight, min_size=1, max_size=12), st.integers(-1, 4))
def test_distribute_is_the_reference(units: int, weights: list[Decimal], decimals: int) -> None:
    quantum = D(1).scaleb(-decimals)
    total = D(units) * quantum
    shares = distribute(total, weights, quantum)
    assert [str(s) for s in shares] == [str(s) for s in reference(total, weights, quantum)]
    assert sum(shares, ZERO) == total
    ratios = [w.as_integer_ratio() if w > ZERO else (0, 1) for w in weights]
    common = lcm(*[den for _, den in ratios])
    assert _scaled_ints(weights) == [num * (common // den) for num, den in ratios]


def test_ties_and_leftovers_follow_the_sorted_order() -> None:
    # Equal remainders: the earlier weights get the leftover quanta, with selection (3) and sort (10) alike.
    for count in (3, 10):
        weights = [D(1)] * count
        for units in range(0, 3 * count):
            total = D(units) * D("0.01")
            assert distribute(total, weights, D("0.01")) == reference(total, weights, D("0.01"))
    assert distribute(D("0.05"), [D("0"), D("-2"), D("0")], D("0.01")) == [D("0.02"), D("0.02"), D("0.01")]


def test_quantum_kept_by_identity_and_fallbacks() -> None:
    # Equal quanta that are distinct objects, and another quantum between them: each call reads its own.
    for quantum in (D("0.01"), D("0.1"), D("0.010"), D("0.01"), D("0.5")):
        shares = distribute(D("1"), [D(1), D(3)], quantum)
        assert [str(s) for s in shares] == [str(s) for s in reference(D("1"), [D(1), D(3)], quantum)]
        assert sum(shares, ZERO) == D("1")
    with pytest.raises(ValueError, match="not a multiple"):
        distribute(D("1.005"), [D(1), D(2)], D("0.01"))
    # Beyond 27 digits the Decimal division decides, rounding included, as before.
    big = D("12345678901234567890123456789.01")
    assert distribute(big, [D(1), D(1)], D("0.01")) == reference(big, [D(1), D(1)], D("0.01"))
    # A negative quantum takes the division too.
    assert distribute(D("1"), [D(1), D(1)], D("-0.5")) == reference(D("1"), [D(1), D(1)], D("-0.5"))


def _program(percent: int) -> Program:
    return program_from({
        "earn_conditions": [{"code": "PCT", "allocation": {"type": "prorated", "percent": percent}}],
        "rule_sets": {"TransactionAdd": [{"name": "s", "rules": [
            {"name": "r", "actions": [{"type": "allocate", "condition": "PCT"}]},
        ]}]},
    })


def _rule(program: Program) -> tuple[Rule, AllocateAction]:
    rule = program.rule_sets["TransactionAdd"][0].rules[0]
    action = rule.actions[0]
    assert isinstance(action, AllocateAction)
    return rule, action


def test_plans_and_bills_are_each_activitys_own() -> None:
    """Programs and bills alternate: every action reads its own program's plan and its own bill's fields."""
    ten, twenty = _program(10), _program(20)
    first = activity("TransactionAdd", "e1", "2024-05-01T10:00:00+02:00", bill_number="b1", amount="100")
    second = activity("TransactionAdd", "e2", "2024-05-01T11:00:00+02:00", bill_number="b2", amount="50")
    for program, purchase, bill, points in [(ten, first, "b1", D(10)), (twenty, first, "b1", D(20)),
                                            (twenty, second, "b2", D(10)), (ten, second, "b2", D(5)),
                                            (ten, first, "b1", D(10))]:
        rule, action = _rule(program)
        assert earn.action_plan(program, action, rule, 0).action is action
        fx = Effects(new_state("c1", "default"), purchase, program, None)
        (lot,) = allocate_action(fx, action, rule, purchase, 0, None)
        assert (lot.points, lot.bill_number) == (points, bill)


def test_environment_is_built_once_from_the_customer_before_the_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    program = program_from({
        "earn_conditions": [{"code": "PCT", "allocation": {"type": "prorated", "percent": 10}}],
        "rule_sets": {"TransactionAdd": [
            {"name": "always", "rules": [{"name": "a", "actions": [{"type": "allocate", "condition": "PCT"}]}]},
            {"name": "big", "rules": [{"name": "b", "when": "transaction.amount >= 50",
                                       "actions": [{"type": "allocate", "condition": "PCT"}]}]},
            {"name": "small", "rules": [{"name": "c", "when": "transaction.amount < 50",
                                         "actions": [{"type": "allocate", "condition": "PCT"}]}]},
        ]},
    })
    built: list[object] = []
    real = Env

    def counting(*args: object) -> object:
        built.append(args[0])
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(rules, "Env", counting)
    purchase = activity("TransactionAdd", "e1", "2024-05-01T10:00:00+02:00", bill_number="b1", amount="100")
    state = new_state("c1", "default")
    fx = Effects(state, purchase, program, None)
    fired = rules.run_rule_sets(fx, "TransactionAdd", purchase, earn.EARN_HANDLERS)
    assert [rule.name for rule in fired] == ["a", "b"]
    assert len(fx.outcome.ledger) == 2
    # One environment for the two conditions (none for the unconditional set), on the state at the start.
    assert built == [state]
    # Unconditional sets only: no environment at all.
    built.clear()
    fx = Effects(new_state("c2", "default"), purchase, _program(10), None)
    assert [rule.name for rule in rules.run_rule_sets(fx, "TransactionAdd", purchase, earn.EARN_HANDLERS)] == ["r"]
    assert built == []


def test_units_of_a_whole_bill_and_of_no_bill() -> None:
    assert [(u.item_id, u.amount) for u in line_items.units_for(None, False, None)] == [(None, ZERO)]


def test_handle_transaction_hands_its_bill_to_the_actions() -> None:
    """`handle_transaction` primes the last bill: each purchase's lots carry its own bill and amount."""
    program = _program(10)
    for event_id, bill, amount, points in [("e1", "b1", "100", D(10)), ("e2", "b2", "30", D(3))]:
        purchase = activity("TransactionAdd", event_id, "2024-05-01T10:00:00+02:00", bill_number=bill,
                            amount=amount)
        assert isinstance(purchase, TransactionAdd)
        fx = Effects(new_state("c1", "default"), purchase, program, None)
        earn.handle_transaction(fx, purchase)
        assert [(e.amount, e.bill_number) for e in fx.outcome.ledger] == [(points, bill)]
