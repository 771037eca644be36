"""Program loading: the document's limitations and every other load-time check, each naming its culprit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loyalty_stream.program.loader import ProgramError, parse_program, read_program_file
from loyalty_stream.program.rules import PLAN_KEY, RulePlan

ROOT = Path(__file__).resolve().parents[2]


def load(**data: Any) -> Any:
    base: dict[str, Any] = {"id": "p", "version": 1, "redeem_conditions": [{"code": "R"}]}
    base.update(data)
    return parse_program(base, "p.yaml")


def problems(**data: Any) -> str:
    with pytest.raises(ProgramError) as caught:
        load(**data)
    return str(caught.value)


CONDITIONS = [
    {"code": "NOW", "allocation": {"type": "fixed", "points": 1}},
    {"code": "WEEK", "allocation": {"type": "fixed", "points": 1}, "delay_days": 7},
    {"code": "FOUR", "allocation": {"type": "fixed", "points": 1}, "delay_days": 4},
    {"code": "WEEK2", "allocation": {"type": "prorated", "percent": 1}, "delay_days": 7},
]


def sets(activity: str, *codes: str) -> dict[str, Any]:
    return {
        activity: [
            {"name": f"s{i}", "rules": [{"name": "r", "actions": [{"type": "allocate", "condition": code}]}]}
            for i, code in enumerate(codes)
        ]
    }


@pytest.mark.parametrize("path", ["programs/default.yaml", "programs/examples/earning.yaml"])
def test_shipped_programs_load_with_compiled_rules(path: str) -> None:
    program = read_program_file(ROOT / path)
    plan = program.compiled[PLAN_KEY]
    assert isinstance(plan, RulePlan)
    assert sum(len(s.rules) for sets_ in plan.by_activity.values() for s in sets_) == sum(
        len(s.rules) for sets_ in program.rule_sets.values() for s in sets_
    )


def test_an_activity_cannot_mix_direct_and_delayed_allocation() -> None:
    text = problems(earn_conditions=CONDITIONS, rule_sets=sets("TransactionAdd", "NOW", "WEEK"))
    assert "rule_sets.TransactionAdd: an activity cannot mix direct allocation" in text
    assert "NOW (rule_sets.TransactionAdd[s0].rules[r].actions[0])" in text
    assert "WEEK (rule_sets.TransactionAdd[s1].rules[r].actions[0])" in text


def test_delayed_strategies_of_one_activity_need_one_delay_period() -> None:
    text = problems(earn_conditions=CONDITIONS, rule_sets=sets("TransactionAdd", "WEEK", "FOUR"))
    assert "must share one delay period" in text and "WEEK" in text and "FOUR" in text
    assert "4 days" in text and "7 days" in text


def test_delayed_strategies_with_the_same_period_are_fine() -> None:
    same = load(earn_conditions=CONDITIONS, rule_sets=sets("TransactionAdd", "WEEK", "WEEK2"))
    assert allocated(same) == {"TransactionAdd": [("WEEK", 7), ("WEEK2", 7)]}
    # Different activities are independent.
    apart = load(
        earn_conditions=CONDITIONS, rule_sets={**sets("TransactionAdd", "WEEK"), **sets("Engagement", "NOW")}
    )
    assert allocated(apart) == {"TransactionAdd": [("WEEK", 7)], "Engagement": [("NOW", None)]}


def allocated(program: Any) -> dict[str, list[tuple[str, int | None]]]:
    """Per activity, the (condition, delay days) its rule sets allocate, in order."""
    return {
        name: [(a.condition, program.earn_condition(a.condition).delay_days)
               for s in rule_sets for r in s.rules for a in r.actions]
        for name, rule_sets in program.rule_sets.items()
    }


@pytest.mark.parametrize("activity", ["Registration", "CustomerUpdate"])
def test_no_delayed_accrual_on_registration_or_customer_update(activity: str) -> None:
    text = problems(earn_conditions=CONDITIONS, rule_sets=sets(activity, "WEEK"))
    assert f"rule_sets.{activity}: delayed accrual is not allowed on {activity}: WEEK" in text


def test_at_least_one_redemption_strategy() -> None:
    text = problems(redeem_conditions=[])
    assert "redeem_conditions: at least one redemption strategy is required" in text


def test_every_problem_is_reported_at_once() -> None:
    text = problems(
        redeem_conditions=[],
        earn_conditions=CONDITIONS,
        rule_sets={
            **sets("Registration", "FOUR"),
            "TransactionAdd": [
                {"name": "s", "rules": [{"name": "bad", "when": "transaction.amount >", "actions": []}]}
            ],
        },
    )
    assert "redeem_conditions" in text and "Registration" in text
    assert "rule_sets.TransactionAdd[s].rules[bad].when: unexpected end of expression at column 21" in text
    assert text.startswith("p.yaml: invalid program")


def test_a_multiplier_must_multiply_a_plain_allocation() -> None:
    text = problems(
        earn_conditions=[
            {"code": "BASE", "allocation": {"type": "fixed", "points": 1}},
            {"code": "X2", "allocation": {"type": "multiplier", "base": "BASE", "percent": 200}},
            {"code": "X4", "allocation": {"type": "multiplier", "base": "X2", "percent": 200}},
        ]
    )
    assert "earn_conditions[X4].allocation.base: 'X2' is itself a multiplier" in text


def test_a_multiplier_window_must_be_ordered() -> None:
    text = problems(
        earn_conditions=[
            {"code": "BASE", "allocation": {"type": "fixed", "points": 1}},
            {
                "code": "X2",
                "allocation": {
                    "type": "multiplier",
                    "base": "BASE",
                    "percent": 200,
                    "valid_from": "2024-02-01T00:00:00Z",
                    "valid_until": "2024-01-01T00:00:00Z",
                },
            },
        ]
    )
    assert "valid_until must be after valid_from" in text


def test_prorating_a_bill_custom_field_per_item_needs_proportions() -> None:
    text = problems(
        earn_conditions=[
            {
                "code": "CF",
                "allocation": {"type": "prorated", "percent": 1, "source": {"custom_field": "units"}},
            }
        ],
        rule_sets={
            "TransactionAdd": [
                {
                    "name": "s",
                    "rules": [
                        {
                            "name": "r",
                            "actions": [
                                {
                                    "type": "allocate",
                                    "condition": "CF",
                                    "line_items": {"use_proportions": False},
                                }
                            ],
                        }
                    ],
                }
            ]
        },
    )
    assert "rule_sets.TransactionAdd[s].rules[r].actions[0]: CF prorates a bill-level custom field" in text


@pytest.mark.parametrize(
    ("allocation", "message"),
    [
        ({"type": "fixed", "points": -1}, "points must be at least 0"),
        ({"type": "prorated", "percent": {"base": -5}}, "percent must be at least 0"),
        ({"type": "step", "points": 1, "step": 0}, "greater than 0"),
        (
            {"type": "round_up", "ranges": [{"from_points": 10, "to_points": 5, "round_to": 10}]},
            "to_points must not be below from_points",
        ),
    ],
)
def test_allocation_values_are_validated(allocation: dict[str, Any], message: str) -> None:
    assert message in problems(earn_conditions=[{"code": "C", "allocation": allocation}])


def test_references_to_unknown_conditions_tiers_and_expiry_fail() -> None:
    assert "unknown earn condition 'NOPE'" in problems(rule_sets=sets("TransactionAdd", "NOPE"))
    assert "unknown tiers ['platinum']" in problems(
        earn_conditions=[{"code": "C", "allocation": {"type": "fixed", "points": {"platinum": 1}}}]
    )
    assert "unknown expiry condition 'X'" in problems(event_points={"expiry": "X"})


def test_tender_modes_need_at_least_one_mode() -> None:
    text = problems(
        earn_conditions=CONDITIONS[:1],
        rule_sets={
            "TransactionAdd": [
                {
                    "name": "s",
                    "rules": [
                        {
                            "name": "r",
                            "actions": [{"type": "allocate", "condition": "NOW", "tender_modes": []}],
                        }
                    ],
                }
            ]
        },
    )
    assert "tender_modes needs at least one payment mode" in text
