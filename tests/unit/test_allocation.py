"""Allocation types and "allocate based on": the document's worked examples, one test each."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Outcome
from loyalty_stream.engine.state import CustomerState, Lot, new_state
from loyalty_stream.events.outputs import LedgerKind
from loyalty_stream.program.model import Program
from tests.unit.conftest import activity, program_from

D = Decimal
TIERS = [{"name": "tier1"}, {"name": "tier2", "threshold": 100000}]


def program(*conditions: dict[str, Any], activity_name: str = "TransactionAdd", **extra: Any) -> Program:
    """One rule set allocating every condition given, in order."""
    actions = [{"type": "allocate", "condition": c["code"]} for c in conditions]
    data: dict[str, Any] = {
        "tiers": TIERS,
        "rounding": {"decimals": 2},
        "earn_conditions": list(conditions),
        "rule_sets": {activity_name: [{"name": "earn", "rules": [{"name": "all", "actions": actions}]}]},
    }
    data.update(extra)
    return program_from(data)


def customer(tier: str = "tier1", **fields: Any) -> CustomerState:
    state = new_state("c1", "default")
    state.tier = tier
    state.custom_fields.update(fields)
    return state


def buy(
    prog: Program,
    amount: str,
    state: CustomerState | None = None,
    when: str = "2024-10-30T10:00:00+00:00",
    **payload: Any,
) -> Outcome:
    return apply(
        state or customer(),
        activity("TransactionAdd", "t1", when, bill_number="B1", amount=amount, **payload),
        prog,
    )


def earned(outcome: Outcome) -> dict[str, Decimal]:
    result: dict[str, Decimal] = {}
    for entry in outcome.ledger:
        if entry.kind in (LedgerKind.EARN, LedgerKind.PROMISE):
            assert entry.condition_code is not None
            result[entry.condition_code] = result.get(entry.condition_code, D(0)) + entry.amount
    return result


# Fixed ---------------------------------------------------------------------------------------------


def test_fixed_10_points_per_transaction_irrespective_of_amount() -> None:
    prog = program({"code": "FIX", "allocation": {"type": "fixed", "points": 10}})
    assert earned(buy(prog, "5")) == {"FIX": D(10)}
    assert earned(buy(prog, "5000")) == {"FIX": D(10)}


@pytest.mark.parametrize(("tier", "points"), [("tier1", 15), ("tier2", 15)])
def test_fixed_same_for_all_tiers(tier: str, points: int) -> None:
    prog = program({"code": "FIX", "allocation": {"type": "fixed", "points": 15}})
    assert earned(buy(prog, "100", customer(tier))) == {"FIX": D(points)}


@pytest.mark.parametrize(("tier", "points"), [("tier1", 10), ("tier2", 15)])
def test_fixed_different_per_tier(tier: str, points: int) -> None:
    prog = program({"code": "FIX", "allocation": {"type": "fixed", "points": {"tier1": 10, "tier2": 15}}})
    assert earned(buy(prog, "100", customer(tier))) == {"FIX": D(points)}


def test_a_tier_left_out_of_a_per_tier_value_earns_nothing() -> None:
    prog = program({"code": "FIX", "allocation": {"type": "fixed", "points": {"tier2": 15}}})
    outcome = buy(prog, "100", customer("tier1"))
    assert outcome.ledger == [] and outcome.skipped == []


# Prorated ------------------------------------------------------------------------------------------


def test_prorated_10_percent_of_500_is_50() -> None:
    prog = program({"code": "PCT", "allocation": {"type": "prorated", "percent": 10}})
    outcome = buy(prog, "500")
    assert earned(outcome) == {"PCT": D(50)}
    entry = outcome.ledger[0]
    assert entry.kind == LedgerKind.EARN and entry.bill_number == "B1" and entry.rule == "all"
    assert entry.balance_after == D(50) and entry.desired_amount is None


@pytest.mark.parametrize(("tier", "points"), [("tier1", "15"), ("tier2", "15")])
def test_prorated_same_percentage_across_tiers(tier: str, points: str) -> None:
    prog = program({"code": "PCT", "allocation": {"type": "prorated", "percent": 15}})
    assert earned(buy(prog, "100", customer(tier))) == {"PCT": D(points)}


@pytest.mark.parametrize(("tier", "points"), [("tier1", "15"), ("tier2", "20")])
def test_prorated_different_percentage_per_tier(tier: str, points: str) -> None:
    prog = program({"code": "PCT", "allocation": {"type": "prorated", "percent": {"tier1": 15, "tier2": 20}}})
    assert earned(buy(prog, "100", customer(tier))) == {"PCT": D(points)}


def test_prorated_keeps_exact_decimals_then_rounds_once() -> None:
    prog = program({"code": "PCT", "allocation": {"type": "prorated", "percent": "3.3"}})
    assert earned(buy(prog, "99.99")) == {"PCT": D("3.30")}  # 3.29967 -> 3.30


# Step function -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "points"), [("450", 20), ("399.99", 10), ("400", 20), ("600", 30), ("199", 0)]
)
def test_step_full_10_points_per_200_spent(amount: str, points: int) -> None:
    prog = program({"code": "STEP", "allocation": {"type": "step", "points": 10, "step": 200}})
    assert earned(buy(prog, amount)) == ({"STEP": D(points)} if points else {})


@pytest.mark.parametrize(
    ("amount", "points"),
    [("1", 5), ("150", 5), ("151", 10), ("150.01", 10), ("300", 10), ("301", 15), ("0", 0)],
)
def test_step_started_5_points_on_every_150(amount: str, points: int) -> None:
    prog = program(
        {"code": "STEP", "allocation": {"type": "step", "points": 5, "step": 150, "count": "started"}}
    )
    assert earned(buy(prog, amount)) == ({"STEP": D(points)} if points else {})


def test_step_per_tier() -> None:
    prog = program(
        {"code": "STEP", "allocation": {"type": "step", "points": {"tier1": 10, "tier2": 20}, "step": 200}}
    )
    assert earned(buy(prog, "450", customer("tier2"))) == {"STEP": D(40)}


# Points multiplier ---------------------------------------------------------------------------------

DIWALI = {
    "code": "DIWALI",
    "allocation": {
        "type": "multiplier",
        "base": "BASE",
        "percent": 1000,
        "valid_from": "2024-10-28T00:00:00+05:30",
        "valid_until": "2024-11-04T00:00:00+05:30",
    },
}
BASE_10 = {"code": "BASE", "allocation": {"type": "fixed", "points": {"tier1": 10, "tier2": 20}}}


def test_multiplier_10x_in_diwali_gives_100() -> None:
    prog = program(BASE_10, DIWALI)
    outcome = buy(prog, "100", when="2024-10-30T10:00:00+05:30")
    assert earned(outcome) == {"BASE": D(10), "DIWALI": D(90)}
    assert outcome.state.current == D(100)
    assert len({e.lot_id for e in outcome.ledger}) == 2  # the promotion is its own lot


@pytest.mark.parametrize("when", ["2024-10-27T23:59:59+05:30", "2024-11-04T00:00:00+05:30"])
def test_multiplier_outside_its_event_time_window_gives_only_the_base(when: str) -> None:
    outcome = buy(program(BASE_10, DIWALI), "100", when=when)
    assert earned(outcome) == {"BASE": D(10)}


def test_multiplier_per_tier_and_on_a_prorated_base() -> None:
    prog = program(
        {"code": "BASE", "allocation": {"type": "prorated", "percent": 10}},
        {
            "code": "PROMO",
            "allocation": {"type": "multiplier", "base": "BASE", "percent": {"tier1": 200, "tier2": 300}},
        },
    )
    assert earned(buy(prog, "500", customer("tier1"))) == {"BASE": D(50), "PROMO": D(50)}
    assert earned(buy(prog, "500", customer("tier2"))) == {"BASE": D(50), "PROMO": D(100)}


def test_multiplier_below_1x_is_a_load_error() -> None:
    with pytest.raises(ValueError, match="at least 100"):
        program(
            BASE_10, {"code": "HALF", "allocation": {"type": "multiplier", "base": "BASE", "percent": 50}}
        )


# Round up ------------------------------------------------------------------------------------------


def round_up_program(ranges: Any, activity_name: str = "TransactionAdd") -> Program:
    return program(
        {"code": "RU", "allocation": {"type": "round_up", "ranges": ranges}}, activity_name=activity_name
    )


def with_balance(points: str, tier: str = "tier1") -> CustomerState:
    state = customer(tier)
    at = datetime.fromisoformat("2024-01-01T00:00:00+00:00")
    state.lots.append(Lot("seed", D(points), D(points), False, at, None, None, "seed"))
    return state


def test_round_up_643_in_0_to_1000_to_10_gives_7() -> None:
    prog = round_up_program([{"from_points": 0, "to_points": 1000, "round_to": 10}])
    outcome = buy(prog, "0", with_balance("643"))
    assert earned(outcome) == {"RU": D(7)}
    assert outcome.state.current == D(650)


def test_round_up_40_in_30_to_100_to_100_gives_60() -> None:
    prog = round_up_program([{"from_points": 30, "to_points": 100, "round_to": 100}], "CustomerUpdate")
    outcome = apply(with_balance("40"), activity("CustomerUpdate", "u1", "2024-10-30T10:00:00Z"), prog)
    assert earned(outcome) == {"RU": D(60)}
    assert outcome.state.current == D(100)


@pytest.mark.parametrize("balance", ["20", "101", "100"])
def test_round_up_outside_the_range_or_already_a_multiple_gives_nothing(balance: str) -> None:
    prog = round_up_program([{"from_points": 30, "to_points": 100, "round_to": 100}])
    assert earned(buy(prog, "0", with_balance(balance))) == {}


def test_round_up_per_tier() -> None:
    prog = round_up_program(
        {
            "tier1": [{"from_points": 30, "to_points": 100, "round_to": 100}],
            "tier2": [{"from_points": 0, "to_points": 1000, "round_to": 50}],
        }
    )
    assert earned(buy(prog, "0", with_balance("643", "tier2"))) == {"RU": D(7)}
    assert earned(buy(prog, "0", with_balance("40", "tier1"))) == {"RU": D(60)}


# Allocate based on ---------------------------------------------------------------------------------


def test_based_on_tier_is_the_default() -> None:
    prog = program({"code": "FIX", "allocation": {"type": "fixed", "points": {"tier1": 1, "tier2": 2}}})
    assert prog.earn_condition("FIX").based_on.kind == "tier"
    state = customer()
    state.tier = None  # a customer with no tier yet is in the lowest
    assert earned(buy(prog, "1", state)) == {"FIX": D(1)}


@pytest.mark.parametrize(("age_group", "points"), [("25-30", 50), ("31-40", 0), (None, 0)])
def test_based_on_registration_field_age_group(age_group: str | None, points: int) -> None:
    prog = program(
        {
            "code": "AGE",
            "allocation": {"type": "fixed", "points": 50},
            "based_on": {"kind": "registration_field", "field": "age_group", "equals": "25-30"},
        },
        activity_name="Registration",
    )
    fields = {} if age_group is None else {"age_group": age_group}
    outcome = apply(None, activity("Registration", "r1", "2024-01-01T10:00:00Z", custom_fields=fields), prog)
    assert earned(outcome) == ({"AGE": D(points)} if points else {})


@pytest.mark.parametrize(("channel", "points"), [("instore", 20), ("online", 0), (None, 0)])
def test_based_on_transaction_field_order_channel(channel: str | None, points: int) -> None:
    prog = program(
        {
            "code": "STORE",
            "allocation": {"type": "prorated", "percent": 10},
            "based_on": {"kind": "transaction_field", "field": "channel", "equals": "instore"},
        }
    )
    extra = {} if channel is None else {"channel": channel}
    assert earned(buy(prog, "200", **extra)) == ({"STORE": D(points)} if points else {})


def test_based_on_transaction_custom_field_compares_kinds_exactly() -> None:
    prog = program(
        {
            "code": "VISIT",
            "allocation": {"type": "fixed", "points": 5},
            "based_on": {"kind": "transaction_field", "field": "visit", "equals": 3},
        }
    )
    assert earned(buy(prog, "1", custom_fields={"visit": 3})) == {"VISIT": D(5)}
    assert earned(buy(prog, "1", custom_fields={"visit": "3"})) == {}


def test_based_on_a_field_needs_field_and_value() -> None:
    with pytest.raises(ValueError, match="needs both 'field' and 'equals'"):
        program(
            {
                "code": "X",
                "allocation": {"type": "fixed", "points": 5},
                "based_on": {"kind": "registration_field", "field": "age_group"},
            }
        )


# Prorating on custom fields ------------------------------------------------------------------------


def custom_field_program(scope: str = "transaction", activity_name: str = "TransactionAdd") -> Program:
    return program(
        {
            "code": "CF",
            "allocation": {
                "type": "prorated",
                "percent": 10,
                "source": {"custom_field": "units", "scope": scope},
            },
        },
        {"code": "BASE", "allocation": {"type": "fixed", "points": 1}},
        activity_name=activity_name,
    )


def test_prorated_on_an_integer_custom_field_20() -> None:
    outcome = buy(custom_field_program(), "999", custom_fields={"units": 20})
    assert earned(outcome) == {"CF": D(2), "BASE": D(1)}


def test_prorated_on_a_string_custom_field_awards_nothing_and_says_why() -> None:
    outcome = buy(custom_field_program(), "999", custom_fields={"units": "John"})
    assert outcome.rejected is None  # the purchase is valid: never dead-lettered for it
    assert earned(outcome) == {"BASE": D(1)}  # the other allocations are unaffected
    assert outcome.state.purchase_count == 1
    (reason,) = outcome.skipped
    assert "CF" in reason and "custom field 'units'" in reason and "'John'" in reason
    assert "not an integer" in reason


@pytest.mark.parametrize(
    ("value", "why"),
    [("20", "not an integer"), (True, "not an integer"), (D("2.5"), "not an integer"), (None, "is missing")],
)
def test_other_non_integer_custom_fields_are_recorded_too(value: Any, why: str) -> None:
    fields = {} if value is None else {"units": value}
    outcome = buy(custom_field_program(), "1", custom_fields=fields)
    assert earned(outcome) == {"BASE": D(1)}
    assert why in outcome.skipped[0]


def test_prorated_on_a_registration_custom_field() -> None:
    prog = custom_field_program("registration")
    assert earned(buy(prog, "1", customer(units=30))) == {"CF": D(3), "BASE": D(1)}
    outcome = apply(
        None,
        activity("Registration", "r1", "2024-01-01T10:00:00Z", custom_fields={"units": 40}),
        custom_field_program("registration", "Registration"),
    )
    assert earned(outcome) == {"CF": D(4), "BASE": D(1)}


# Delayed accrual -----------------------------------------------------------------------------------


def test_delayed_condition_issues_promised_points_due_the_morning_after_the_delay() -> None:
    prog = program(
        {"code": "LATER", "allocation": {"type": "fixed", "points": 20}, "delay_days": 1},
        timezone="Asia/Kolkata",
    )
    outcome = buy(prog, "100", when="2024-09-28T15:00:00+05:30")
    (entry,) = outcome.ledger
    assert entry.kind == LedgerKind.PROMISE and entry.amount == D(20)
    assert entry.available_at == datetime.fromisoformat("2024-09-30T00:00:00+05:30")
    assert outcome.state.promised == D(20) and outcome.state.current == D(0)
    assert outcome.state.lifetime_earned == D(20)


def test_a_bill_number_is_credited_once_even_under_a_new_event_id() -> None:
    """A POS retry re-sends the bill with a new event id: rejected, nothing credited, the bill keeps its lots."""
    prog = program({"code": "PCT", "allocation": {"type": "prorated", "percent": 10}})
    first = buy(prog, "100")
    state = first.state
    again = apply(state, activity("TransactionAdd", "t2", "2024-10-30T11:00:00+00:00", bill_number="B1",
                                  amount="500"), prog)
    assert again.rejected is not None and "already credited by event 't1'" in again.rejected
    assert again.ledger == [] and again.balance_change is None
    assert again.state.current == Decimal("10.00")
    assert again.state.bills["B1"].event_id == "t1" and again.state.bills["B1"].amount == Decimal("100")
    other = apply(again.state, activity("TransactionAdd", "t3", "2024-10-30T12:00:00+00:00", bill_number="B2",
                                        amount="50"), prog)
    assert other.rejected is None and other.state.current == Decimal("15.00")


def test_a_copied_program_with_other_conditions_earns_by_its_own_conditions() -> None:
    """Per-condition facts are cached in `program.compiled`, which `model_copy` shares: the copy must not earn
    by the original's conditions (what-if tools and tests copy programs with changed conditions)."""
    prog = program({"code": "PCT", "allocation": {"type": "prorated", "percent": 10}})
    assert earned(buy(prog, "500")) == {"PCT": D("50.00")}
    changed = prog.earn_conditions[0].model_copy(
        update={"allocation": prog.earn_conditions[0].allocation.model_copy(update={"percent": D(20)})})
    copy = prog.model_copy(update={"earn_conditions": [changed]})
    assert copy.compiled is prog.compiled  # the cache is shared ...
    assert earned(buy(copy, "500")) == {"PCT": D("100.00")}  # ... but not its facts
    assert earned(buy(prog, "500")) == {"PCT": D("50.00")}


def test_a_deep_copy_of_a_used_program_compiles_its_own_artefacts() -> None:
    """`model_copy(deep=True)` of a program the engine has used: the copy's cache starts empty (copied plans
    would key the original's rules, and the compiled engine's frozen artefacts cannot be copied) and it earns
    alike from artefacts of its own."""
    prog = program({"code": "PCT", "allocation": {"type": "prorated", "percent": 10}})
    assert earned(buy(prog, "500")) == {"PCT": D("50.00")}
    assert prog.compiled
    copy = prog.model_copy(deep=True)
    assert copy.compiled == {} and copy.compiled is not prog.compiled
    assert earned(buy(copy, "500")) == {"PCT": D("50.00")}
    assert copy.compiled.keys() == prog.compiled.keys()
    assert all(copy.compiled[key] is not prog.compiled[key] for key in copy.compiled)
