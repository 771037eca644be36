"""The fast form of conditions (one closure over (get, check) tests) against the generic closures.

Every condition is compiled twice, `fast=True` (what the engine runs) and `fast=False` (the closure per node
the language was first written as), and both must agree on values of every kind: numbers, texts, bools,
nulls and missing custom fields, where a wrong kind makes the condition not hold.
"""

from __future__ import annotations

import operator
from decimal import Decimal
from functools import partial
from typing import Any

import pytest

from loyalty_stream.engine.state import new_state
from loyalty_stream.program import expressions
from loyalty_stream.program.expressions import Env, compile_condition
from tests.unit.conftest import activity, program_from

PROGRAM = program_from(
    {"timezone": "Europe/London", "tiers": [{"name": "bronze"}, {"name": "gold", "threshold": 1000}]}
)

# Custom-field values of every kind (the language sees ints as Decimals; None: the field is missing).
VALUES: tuple[Any, ...] = (Decimal(5), 5, Decimal("5.0"), Decimal(0), 1, "5", "abc", "", True, False, None)


def transaction(channel: str | None, amount: str, categories: tuple[str | None, ...]) -> Any:
    items = [{"item_id": str(i), "sku": f"S{i}", "amount": "10", **({"category": c} if c else {})}
             for i, c in enumerate(categories)]
    extra = {"channel": channel} if channel is not None else {}
    return activity("TransactionAdd", "t1", "2024-06-05T09:30:00+00:00", bill_number="B1", amount=amount,
                    line_items=items, tenders=[{"mode": "ABC_CREDIT_CARD", "amount": amount}], **extra)


TRANSACTIONS = (
    transaction("online", "250.50", ("fuel", None, "food")),
    transaction(None, "1000", ("food",)),
    transaction("store", "0.01", ()),
    transaction("app", "999.99", (None, "fuel")),
)


def envs() -> list[Env]:
    result = []
    for tx in TRANSACTIONS:
        for value in VALUES:
            state = new_state("c1", "default")
            state.tier = "gold"
            if value is not None:
                state.custom_fields["x"] = value
            result.append(Env(state, tx, PROGRAM, tx.event_time, "TransactionAdd"))
    return result


ENVS = envs()

# Shapes with a fast form (a test, or an and/or chain of tests) and their neighbours.
FAST = [
    "transaction.amount >= 1000",
    "transaction.amount < 250.5",
    "transaction.amount > 250.5 and line_item_count >= 3",
    "transaction.amount <= 1 or line_item_count >= 2 or transaction.channel == \"app\"",
    'transaction.channel in ["online", "app"]',
    'transaction.channel not in ["online", "app"]',
    'transaction.channel in ["online", null]',
    "transaction.channel == null",
    "transaction.channel != null",
    'transaction.channel == "online"',
    'transaction.channel != "online"',
    '"fuel" in transaction.categories',
    '"fuel" not in transaction.categories',
    '"S1" in transaction.skus and "ABC_CREDIT_CARD" in transaction.tender_modes',
    "customer.custom_fields.x == 5",
    "customer.custom_fields.x != 5",
    'customer.custom_fields.x == "abc"',
    'customer.custom_fields.x != "5"',
    "customer.custom_fields.x == true",
    "customer.custom_fields.x == false",
    "customer.custom_fields.x == null",
    "customer.custom_fields.x != null",
    "customer.custom_fields.x and transaction.amount > 1",
    "transaction.amount > 1 and customer.custom_fields.x",
    "customer.custom_fields.x or transaction.amount > 1",
    "transaction.amount > 1 or customer.custom_fields.x",
    '(transaction.amount > 300 or transaction.channel == "online") and line_item_count >= 1',
    '"fuel" in transaction.categories or (transaction.amount > 1 and customer.custom_fields.x == 5)',
    "customer.lifetime_points >= 0 and customer.tier == \"gold\"",
    "transaction.amount / 0 > 1 or transaction.amount > 1",
    "transaction.amount / customer.custom_fields.x > 1",
    "customer.custom_fields.x + 1 > 5 or transaction.amount > 1",
]
GENERIC = [  # no fast form at the top (they still mix with fast operands)
    "customer.custom_fields.x > 3",
    'customer.custom_fields.x < "b"',
    "customer.custom_fields.x in [1, 5]",
    'customer.custom_fields.x in ["abc", "x"]',
    'customer.custom_fields.x not in ["abc", null]',
    "not (customer.custom_fields.x == 5)",
    "not (transaction.amount > 1 and customer.custom_fields.x)",
    "customer.custom_fields.x",
    "5 == customer.custom_fields.x",
]


def both(text: str) -> tuple[Any, Any]:
    return compile_condition(text, "TransactionAdd").holds, compile_condition(text, "TransactionAdd", False).holds


def is_fast(holds: Any) -> bool:
    return bool(holds.__qualname__.startswith("_holds."))


@pytest.mark.parametrize("text", FAST + GENERIC)
def test_the_fast_form_agrees_with_the_generic_closures_on_every_kind(text: str) -> None:
    fast, generic = both(text)
    assert is_fast(fast) == (text in FAST), text
    assert not is_fast(generic)
    answers = [generic(env) for env in ENVS]
    assert [fast(env) for env in ENVS] == answers, text
    assert all(answer is True or answer is False for answer in answers)


def test_the_semantics_the_fast_form_must_keep() -> None:
    """Values the fast checks could get wrong if they compared plainly: a bool is not the number 1, a
    number is not its text, a missing field equals only null, a wrong kind makes a condition not hold."""
    def on(value: Any, text: str) -> bool:
        state = new_state("c1", "default")
        if value is not None:
            state.custom_fields["x"] = value
        env = Env(state, TRANSACTIONS[0], PROGRAM, TRANSACTIONS[0].event_time, "TransactionAdd")
        return compile_condition(text, "TransactionAdd").holds(env)

    assert not on(True, "customer.custom_fields.x == 1 and transaction.amount > 1")
    assert on(1, "customer.custom_fields.x == 1 and transaction.amount > 1")
    assert on(Decimal("1.00"), "customer.custom_fields.x == 1 and transaction.amount > 1")
    assert not on("1", "customer.custom_fields.x == 1 and transaction.amount > 1")
    assert on(None, "customer.custom_fields.x == null and transaction.amount > 1")
    assert not on(None, "customer.custom_fields.x != null and transaction.amount > 1")
    assert not on("yes", "customer.custom_fields.x or transaction.amount > 1")  # not a bool: does not hold
    assert not on(None, "transaction.amount > 1 and customer.custom_fields.x")


def test_a_wrong_fast_check_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above fails against a deliberately wrong fast form (unreflected ordering, `==`
    without the kind check, set membership that forgets null)."""
    def disagree(text: str) -> bool:
        fast, generic = both(text)
        assert is_fast(fast)
        return any(fast(env) != generic(env) for env in ENVS)

    monkeypatch.setitem(expressions._REFLECTED, ">=", operator.ge)
    assert disagree("transaction.amount >= 1000")
    monkeypatch.undo()
    monkeypatch.setattr(expressions, "_equality_check", lambda op, same, value: partial(operator.eq, value))
    assert disagree("customer.custom_fields.x == 1 and transaction.amount > 1")
    monkeypatch.undo()
    monkeypatch.setattr(expressions, "_has", lambda text, field, records: any(field(r) for r in records))
    assert disagree('"fuel" in transaction.categories')
    monkeypatch.undo()
    monkeypatch.setattr(expressions, "_IS_TRUE", lambda value: True)
    assert disagree("customer.lifetime_points > 0 or not (transaction.amount > 1)")
