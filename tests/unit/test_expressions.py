"""The rule-condition language: parsing, type checking at load, safe evaluation per event."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from loyalty_stream.engine.state import Lot, Redemption, new_state
from loyalty_stream.events.outputs import TierChange
from loyalty_stream.program.expressions import (
    SCHEMAS,
    Binary,
    Call,
    Env,
    ExpressionError,
    Literal,
    Name,
    Unary,
    compile_condition,
    parse,
    tokenize,
)
from loyalty_stream.program.loader import ProgramError
from tests.unit.conftest import activity, program_from

PROGRAM = program_from(
    {"timezone": "Europe/London", "tiers": [{"name": "bronze"}, {"name": "gold", "threshold": 1000}]}
)
TX = activity(
    "TransactionAdd",
    "t1",
    "2024-06-05T09:30:00+00:00",
    bill_number="B1",
    amount="250.50",
    channel="online",
    line_items=[
        {
            "item_id": "1",
            "sku": "FUEL95",
            "amount": "200",
            "category": "fuel",
            "custom_fields": {"litres": 40},
        },
        {"item_id": "2", "sku": "SNACK", "amount": "30.50"},
        {"item_id": "3", "sku": "WATER", "amount": "20", "quantity": 2},
    ],
    tenders=[{"mode": "ABC_CREDIT_CARD", "amount": "200"}, {"mode": "CASH", "amount": "50.50"}],
    custom_fields={"campaign": "summer", "visits": 3},
)


def customer(**fields: Any) -> Any:
    state = new_state("c1", "default")
    state.tier = "gold"
    state.custom_fields.update(fields)
    return state


def holds(text: str, act: Any = TX, state: Any = None, name: str = "") -> bool:
    name = name or type(act).__name__
    at = getattr(act, "event_time", None) or act.occurred_at
    env = Env(state or customer(), act, PROGRAM, at, name)
    return compile_condition(text, name).holds(env)


def error(text: str, activity_name: str = "TransactionAdd") -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        compile_condition(text, activity_name)
    return caught.value


# Parsing -------------------------------------------------------------------------------------------


def test_tokens_carry_exact_decimals_and_columns() -> None:
    tokens = tokenize("amount >= 100.25 and x in [\"a\", 'b\\'c']")
    assert [t.kind for t in tokens][:4] == ["ident", "op", "number", "keyword"]
    assert tokens[2].value == Decimal("100.25") and isinstance(tokens[2].value, Decimal)
    assert tokens[2].column == 11
    assert [t.value for t in tokens if t.kind == "string"] == ["a", "b'c"]


def test_precedence_builds_our_own_ast() -> None:
    node = parse("not a.b == 1 + 2 * 3 or c and d")
    assert isinstance(node, Binary) and node.op == "or"
    left = node.left
    assert isinstance(left, Unary) and left.op == "not"
    comparison = left.operand
    assert isinstance(comparison, Binary) and comparison.op == "=="
    assert isinstance(comparison.left, Name) and comparison.left.parts == ("a", "b")
    sum_ = comparison.right
    assert isinstance(sum_, Binary) and sum_.op == "+"
    assert isinstance(sum_.right, Binary) and sum_.right.op == "*"
    assert isinstance(node.right, Binary) and node.right.op == "and"
    call = parse("customer.points_redeemed_in_past_days(7)")
    assert isinstance(call, Call) and call.function.dotted == "customer.points_redeemed_in_past_days"
    assert isinstance(call.args[0], Literal) and call.args[0].value == Decimal(7)


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("transaction.amount >", "unexpected end of expression", 21),
        ("transaction.amount > $5", "unexpected character '$'", 22),
        ('customer.tier == "gold', "unterminated string", 18),
        ("(transaction.amount > 1", "expected ')', found end of expression", 24),
        ("1 < 2 < 3", "comparisons cannot be chained", 7),
        ("transaction.amount > 1 1", "unexpected '1'", 24),
        ("", "empty expression", 1),
        ("12abc > 1", "malformed number", 1),
        ("customer. > 1", "expected a name after '.'", 11),
    ],
)
def test_syntax_errors_name_the_column(text: str, message: str, column: int) -> None:
    caught = error(text)
    assert message in caught.message
    assert caught.column == column
    assert str(caught).startswith(f"{caught.message} at column {column}")


def test_depth_and_length_are_bounded_instead_of_crashing() -> None:
    assert "nested deeper" in error("(" * 200 + "true" + ")" * 200).message
    assert "nested deeper" in error("not " * 200 + "true").message
    assert "longer than" in error("true and " * 1000 + "true").message


# Type checking -------------------------------------------------------------------------------------


def test_unknown_name_is_a_load_error_with_rule_and_column() -> None:
    with pytest.raises(ProgramError) as caught:
        program_from(
            {
                "earn_conditions": [{"code": "B", "allocation": {"type": "fixed", "points": 5}}],
                "rule_sets": {
                    "TransactionAdd": [
                        {
                            "name": "set1",
                            "rules": [
                                {
                                    "name": "gold bonus",
                                    "when": "1 <= 2 and (transaction.amout > 100)",
                                    "actions": [{"type": "allocate", "condition": "B"}],
                                }
                            ],
                        }
                    ]
                },
            }
        )
    assert (
        "rule_sets.TransactionAdd[set1].rules[gold bonus].when: unknown name 'transaction.amout' "
        "at column 13; did you mean 'transaction.amount'?"
    ) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("customer.__class__ == 1", "unknown name 'customer.__class__'"),
        ("__import__('os')", "unknown function '__import__'"),
        ("().__init__", "unexpected ')'"),
        ("transaction.amount.__class__ == 1", "unknown name 'transaction.amount.__class__'"),
        ("customer.custom_fields == 1", "needs a field name"),
        ("min == 1", "is a function"),
        ("open('x')", "unknown function 'open'"),
        ("transaction.amount > 'x'", "cannot compare number with string"),
        ("transaction.amount and true", "'and' needs a bool, got number"),
        ("not transaction.channel", "'not' needs a bool, got string"),
        ("transaction.channel + 1 > 2", "'+' needs a number, got string"),
        ("transaction.amount", "must be true or false"),
        ("transaction.amount in 5", "needs a list on the right"),
        ('transaction.amount in ["a", "b"]', "cannot look for a number in a list[string]"),
        ('transaction.channel in ["a", 1]', "list elements must share one type"),
        ("customer.points_redeemed_in_past_days('x') > 1", "needs a number argument, got string"),
        ("customer.points_redeemed_in_past_days(1, 2) > 1", "takes 1 argument(s), got 2"),
        ("abs(1, 2) > 0", "abs() takes 1 argument"),
        ("max() > 0", "max() needs at least one argument"),
        ("min('a') > 0", "min() needs number arguments"),
        ("true > false", "compares numbers or strings, got bool"),
        ("1 / 0 > 1", "division by zero"),
    ],
)
def test_type_errors_and_escapes_are_load_errors(text: str, message: str) -> None:
    assert message in str(error(text))


def test_schema_is_per_activity() -> None:
    caught = error("transaction.amount > 1", "Registration")
    assert "unknown name 'transaction.amount'" in str(caught)
    assert "only on TransactionAdd" in str(caught)
    for text, name, read in (
        ('registration.custom_fields.age_group == "25-30"', "Registration", "registration.custom_fields.age_group"),
        ('engagement.event_name == "page_view"', "Engagement", "engagement.event_name"),
        ('tier_change.to_tier == "gold"', "TierChange", "tier_change.to_tier"),
        ("redemption.points <= 500", "PointsRedemption", "redemption.points"),
        ("accrual.points > 0", "DelayedAccrual", "accrual.points"),
    ):
        assert compile_condition(text, name).names == {read}
    for schema in SCHEMAS.values():
        assert "customer.tier" in schema.names and "event.date" in schema.names


def test_the_document_spelling_of_redemption_limits_reads_the_same_counters() -> None:
    state = customer()
    for rid, when, points in (("a", "2024-06-04T23:30:00+00:00", 100), ("b", "2024-06-03T12:00:00+00:00", 200),
                              ("c", "2024-05-31T12:00:00+00:00", 400), ("d", "2024-05-20T12:00:00+00:00", 800),
                              ("e", "2024-06-01T12:00:00+00:00", 50)):  # this month, last week
        state.redemptions[rid] = Redemption(rid, rid, datetime.fromisoformat(when), Decimal(points), None)
    redemption = activity("PointsRedemption", "r9", "2024-06-05T09:30:00+00:00", points="10")
    for text in (
        "currentCustomer.pointsRedeemedToday == 100",
        "currentCustomer.pointsRedeemedInCalendarWeek == 300",
        "currentCustomer.pointsRedeemedInCalendarMonth == 350",
        "currentCustomer.pointsRedeemedInPastDays(7) == 750",
        "currentCustomer.pointsRedeemedInPastDays(30) == 1550",
    ):
        assert holds(text, redemption, state=state), text
        assert not holds(text.replace("==", "!="), redemption, state=state), text


def test_the_source_never_reaches_python_eval() -> None:
    import ast

    tree = ast.parse(Path("loyalty_stream/program/expressions.py").read_text())
    called = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not called & {"eval", "exec", "compile", "__import__"}
    assert "literal_eval" not in attributes and "ast" not in imported


# Evaluation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('transaction.amount > 100 and customer.tier == "gold"', True),
        ("transaction.amount > 250.50", False),
        ("transaction.amount >= 250.5", True),
        ('transaction.channel in ["online", "app"]', True),
        ('transaction.channel not in ["online", "app"]', False),
        ("line_item_count >= 3", True),
        ("transaction.line_item_count == 3 and transaction.total_quantity == 4", True),
        ('"fuel" in transaction.categories and "FUEL95" in transaction.skus', True),
        ('"ABC_CREDIT_CARD" in transaction.tender_modes', True),
        ('transaction.tender_amount("ABC_CREDIT_CARD") / transaction.amount > 0.75', True),
        ('transaction.tender_amount("NONE") == 0', True),
        ('transaction.custom_fields.campaign == "summer"', True),
        ("transaction.custom_fields.visits == 3", True),
        ("transaction.custom_fields.visits * 2 + 1 == 7", True),
        ("transaction.custom_fields.missing == null", True),
        ('transaction.custom_fields["campaign"] != null', True),
        ("min(transaction.amount, 100) == 100 and max(1, 2, 3) == 3 and abs(-2.5) == 2.5", True),
        ("-transaction.amount < 0 and 7 % 4 == 3 and 1 / 4 == 0.25", True),
        ('not (transaction.amount < 10 or customer.tier == "bronze")', True),
        ('event.date == "2024-06-05" and event.hour == 10 and event.weekday == 3', True),  # BST: 10:30 local
        ('event.month == 6 and event.day == 5 and event.type == "TransactionAdd"', True),
        ("customer.registered", False),
        ("true", True),
        ("false or false", False),
    ],
)
def test_evaluation(text: str, expected: bool) -> None:
    assert holds(text) is expected


def test_customer_names() -> None:
    state = customer(age_group="25-30", age=27, vip=True)
    state.lifetime_earned = Decimal("1200.5")
    state.lifetime_purchases = Decimal("8000")
    state.purchase_count = 12
    state.registered_at = datetime.fromisoformat("2024-01-01T00:00:00+00:00")
    at = TX.event_time
    state.lots.append(Lot("l1", Decimal(300), Decimal(300), False, at, None, None, "e"))
    state.lots.append(Lot("l2", Decimal(50), Decimal(50), True, at, None, None, "e"))
    assert holds('customer.custom_fields.age_group == "25-30"', state=state)
    assert holds("customer.custom_fields.age > 25 and customer.custom_fields.vip", state=state)
    assert holds("customer.lifetime_points == 1200.5 and customer.lifetime_purchases > 7999", state=state)
    assert holds("customer.purchase_count == 12 and customer.registered", state=state)
    assert holds("customer.current_points == 300 and customer.promised_points == 50", state=state)
    assert holds('customer.tier == "gold"', state=state)
    state.tier = None
    assert holds('customer.tier == "bronze"', state=state)  # no tier yet: the lowest


def test_redemption_figures_count_in_event_time_in_the_program_zone() -> None:
    state = customer()

    def redeemed(rid: str, when: str, points: int) -> None:
        state.redemptions[rid] = Redemption(rid, rid, datetime.fromisoformat(when), Decimal(points), None)

    redeemed("a", "2024-06-04T23:30:00+00:00", 100)  # 00:30 on 5 June in London: today
    redeemed("b", "2024-06-03T12:00:00+00:00", 200)  # Monday: this calendar week
    redeemed("c", "2024-05-31T12:00:00+00:00", 400)  # last month, within 7 days
    redeemed("d", "2024-05-20T12:00:00+00:00", 800)  # long ago
    redeemed("later", "2024-06-06T12:00:00+00:00", 5000)  # after the event: ignored
    assert holds("customer.points_redeemed_today == 100", state=state)
    assert holds("customer.points_redeemed_in_calendar_week == 300", state=state)
    assert holds("customer.points_redeemed_in_calendar_month == 300", state=state)
    assert holds("customer.points_redeemed_in_past_days(7) == 700", state=state)
    assert holds("customer.points_redeemed_in_past_days(30) <= 1500", state=state)
    assert holds("customer.points_redeemed_today < 500", state=state)


def test_runtime_mismatches_make_the_condition_not_hold() -> None:
    state = customer(age="John", flag="yes")
    assert not holds("customer.custom_fields.age > 25", state=state)
    assert not holds("not (customer.custom_fields.age > 25)", state=state)  # undefined, not negated
    assert not holds("customer.custom_fields.missing > 1", state=state)
    assert not holds("customer.custom_fields.flag", state=state)  # a string is not true
    assert not holds("customer.custom_fields.age + 1 > 0", state=state)
    assert not holds("transaction.amount / (transaction.custom_fields.visits - 3) > 1")  # division by zero
    assert not holds("customer.points_redeemed_in_past_days(transaction.custom_fields.visits - 3) > 1")
    assert holds('customer.custom_fields.age == "John"', state=state)
    assert not holds("customer.custom_fields.age == 25", state=state)  # a string never equals a number


def test_equality_keeps_kinds_apart() -> None:
    state = customer(flag=True, count=1, code="1")
    assert not holds("customer.custom_fields.flag == 1", state=state)
    assert not holds("customer.custom_fields.flag in [1, 2]", state=state)
    assert holds("customer.custom_fields.flag in [true]", state=state)
    assert holds("customer.custom_fields.count in [1, 2]", state=state)
    assert not holds("customer.custom_fields.code in [1, 2]", state=state)
    assert holds('customer.custom_fields.code in ["1"]', state=state)


def test_other_activities() -> None:
    reg = activity(
        "Registration", "r1", "2024-06-05T09:30:00Z", custom_fields={"age_group": "25-30"}, tier="gold"
    )
    assert holds('registration.custom_fields.age_group == "25-30" and registration.tier == "gold"', reg)
    eng = activity("Engagement", "e1", "2024-06-05T09:30:00Z", event_name="bid_won", count=3)
    assert holds('engagement.category == "auction" and engagement.count == 3', eng)
    change = TierChange(
        change_id="x",
        customer_id="c1",
        program_id="default",
        from_tier="bronze",
        to_tier="gold",
        reason="r",
        cause_event_id="t",
        occurred_at=TX.event_time,
    )
    assert holds(
        'tier_change.from_tier == "bronze" and tier_change.to_tier == "gold"', change, name="TierChange"
    )


def test_literal_only_conditions_compile_to_constants() -> None:
    assert compile_condition("true", "TransactionAdd").holds(None) is True  # type: ignore[arg-type]
    assert compile_condition("not true", "TransactionAdd").holds(None) is False  # type: ignore[arg-type]


@pytest.mark.parametrize("items", [
    ["1", "x"], ["X", "y"], [1, Decimal(1), True, None, ["x"], {"x": 1}], ["x"], [], ("a", "x"), "x", 5,
])
@pytest.mark.parametrize("negate", [False, True])
def test_a_literal_text_is_looked_for_as_the_plain_membership_does(items: Any, negate: bool) -> None:
    """`"x" in <list>` has its own fast path: it holds exactly when the general one (a text that is not a
    literal) does."""
    state = customer(tags=items, needle="x")
    op = "not in" if negate else "in"
    general = holds(f"customer.custom_fields.needle {op} customer.custom_fields.tags", state=state)
    assert holds(f'"x" {op} customer.custom_fields.tags', state=state) is general
    assert general is (isinstance(items, list | tuple) and ("x" in items) != negate)


@pytest.mark.parametrize("op", ["<", "<=", ">", ">="])
@pytest.mark.parametrize("limit", ["250", "250.50", "250.5", "251", "0"])
def test_a_number_ordered_against_a_literal_as_against_any_value(op: str, limit: str) -> None:
    """`amount >= 1000` binds the literal (its own path): the same result as a number read per evaluation."""
    general = holds(f"transaction.amount {op} transaction.custom_fields.limit",
                    act=TX.model_copy(update={"payload": TX.payload.model_copy(
                        update={"custom_fields": {"limit": Decimal(limit)}})}))
    assert holds(f"transaction.amount {op} {limit}") is general
