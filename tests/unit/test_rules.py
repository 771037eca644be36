"""Rule sets per activity: ordering, if / else-if within a set, actions, handlers, compiled conditions."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from loyalty_stream.engine import rules as engine_rules
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.state import Redemption, new_state
from loyalty_stream.events.outputs import Channel, LedgerKind
from loyalty_stream.program import expressions
from loyalty_stream.program.model import Program
from loyalty_stream.program.rules import PLAN_KEY, Rule, RulePlan
from tests.unit.conftest import activity, program_from

D = Decimal
CONDITIONS = [
    {"code": "BASE", "allocation": {"type": "prorated", "percent": 10}},
    {"code": "GOLD", "allocation": {"type": "fixed", "points": 50}},
    {"code": "BIG", "allocation": {"type": "fixed", "points": 20}},
    {"code": "SMALL", "allocation": {"type": "fixed", "points": 1}},
    {"code": "RICH", "allocation": {"type": "fixed", "points": 7}},
]
TIERS = [{"name": "bronze"}, {"name": "silver", "threshold": 100000}, {"name": "gold", "threshold": 200000}]


def program(sets: list[dict[str, Any]], activity_name: str = "TransactionAdd", **extra: Any) -> Program:
    data: dict[str, Any] = {"tiers": TIERS, "earn_conditions": CONDITIONS, "rule_sets": {activity_name: sets}}
    data.update(extra)
    return program_from(data)


def allocate(code: str) -> dict[str, str]:
    return {"type": "allocate", "condition": code}


def buy(prog: Program, amount: str, tier: str = "bronze", **payload: Any) -> Any:
    state = new_state("c1", "default")
    state.tier = tier
    return apply(
        state,
        activity("TransactionAdd", "t1", "2024-03-01T12:00:00Z", bill_number="B1", amount=amount, **payload),
        prog,
    )


def codes(outcome: Any) -> list[str]:
    return [e.condition_code for e in outcome.ledger if e.kind == LedgerKind.EARN]


CHAIN = program(
    [
        {"name": "base", "rules": [{"name": "base earn", "actions": [allocate("BASE")]}]},
        {
            "name": "bonus",
            "rules": [
                {
                    "name": "gold bonus",
                    "when": 'transaction.amount > 100 and customer.tier == "gold"',
                    "actions": [allocate("GOLD")],
                },
                {"name": "big basket", "when": "transaction.amount > 100", "actions": [allocate("BIG")]},
                {"name": "otherwise", "actions": [allocate("SMALL")]},
            ],
        },
        {
            "name": "after base",
            "rules": [
                {"name": "rich", "when": "customer.current_points >= 30", "actions": [allocate("RICH")]},
            ],
        },
    ]
)


def test_every_set_runs_in_order_and_the_first_matching_rule_of_a_set_wins() -> None:
    assert codes(buy(CHAIN, "300", "gold")) == ["BASE", "GOLD", "RICH"]
    assert codes(buy(CHAIN, "300", "silver")) == ["BASE", "BIG", "RICH"]
    assert codes(buy(CHAIN, "50")) == ["BASE", "SMALL"]  # 5 + 1 < 30: the last set finds no rule


def test_later_sets_see_what_earlier_sets_awarded() -> None:
    # 10 % of 250 = 25, + BIG 20 = 45 >= 30: "rich" fires only because of the earlier sets.
    assert codes(buy(CHAIN, "250")) == ["BASE", "BIG", "RICH"]
    assert codes(buy(CHAIN, "90")) == ["BASE", "SMALL"]


def test_ledger_entries_name_the_rule_and_lots_are_distinct_per_set() -> None:
    prog = program(
        [
            {"name": "a", "rules": [{"name": "same", "actions": [allocate("SMALL")]}]},
            {"name": "b", "rules": [{"name": "same", "actions": [allocate("SMALL")]}]},
        ]
    )
    outcome = buy(prog, "10")
    assert [(e.rule, e.amount) for e in outcome.ledger] == [("same", D(1)), ("same", D(1))]
    assert len({e.lot_id for e in outcome.ledger}) == 2 and len({e.entry_id for e in outcome.ledger}) == 2


def test_notify_coupon_and_upgrade_actions() -> None:
    prog = program(
        [
            {
                "name": "s",
                "rules": [
                    {
                        "name": "vip",
                        "when": "transaction.amount >= 1000",
                        "actions": [
                            {
                                "type": "notify",
                                "channel": "sms",
                                "template": "big_spender",
                                "data": {"campaign": "spring"},
                            },
                            {"type": "notify", "channel": "wechat", "template": "big_spender"},
                            {"type": "issue_coupon", "series": "VIP-10"},
                            {"type": "upgrade_tier", "tier": "silver"},
                        ],
                    }
                ],
            }
        ]
    )
    outcome = buy(prog, "1000")
    assert [(n.channel, n.template) for n in outcome.notifications[:2]] == [
        (Channel.SMS, "big_spender"),
        (Channel.WECHAT, "big_spender"),
    ]
    assert outcome.notifications[0].data == {"campaign": "spring"}
    assert len({n.notification_id for n in outcome.notifications}) == len(outcome.notifications)
    (coupon,) = outcome.coupons
    assert coupon.series == "VIP-10" and coupon.rule == "vip" and coupon.cause_event_id == "t1"
    (change,) = outcome.tier_changes
    assert (change.from_tier, change.to_tier, change.reason) == ("bronze", "silver", "rule vip")
    assert outcome.notifications[-1].template == "tier_upgraded"
    assert outcome.state.tier == "silver"
    # No downgrade through the action.
    assert buy(prog, "1000", "gold").tier_changes == []


def test_coupons_of_two_sets_with_the_same_rule_name_get_distinct_ids() -> None:
    coupon = {"name": "r", "actions": [{"type": "issue_coupon", "series": "S"}]}
    prog = program([{"name": "a", "rules": [coupon]}, {"name": "b", "rules": [coupon]}])
    outcome = buy(prog, "1")
    assert len({c.coupon_id for c in outcome.coupons}) == 2


def test_actions_are_checked_per_activity_at_load() -> None:
    with pytest.raises(
        ValueError,
        match=r"rule_sets.TransactionAdd\[s\].rules\[r\].actions\[0\]: action 'redeem' "
        r"is not available on TransactionAdd",
    ):
        program([{"name": "s", "rules": [{"name": "r", "actions": [{"type": "redeem"}]}]}])
    with pytest.raises(ValueError, match="action 'allocate' is not available on DelayedAccrual"):
        program([{"name": "s", "rules": [{"name": "r", "actions": [allocate("BASE")]}]}], "DelayedAccrual")


def test_duplicate_names_are_load_errors() -> None:
    with pytest.raises(ValueError, match="duplicate rule names"):
        program([{"name": "s", "rules": [{"name": "r"}, {"name": "r"}]}])
    with pytest.raises(ValueError, match="duplicate rule set name 's'"):
        program([{"name": "s", "rules": [{"name": "r"}]}, {"name": "s", "rules": [{"name": "q"}]}])


def test_conditions_are_compiled_once_at_load_and_never_parsed_per_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = CHAIN.compiled[PLAN_KEY]
    assert isinstance(plan, RulePlan)
    assert [s.rule_set.name for s in plan.by_activity["TransactionAdd"]] == ["base", "bonus", "after base"]

    def refuse(*args: Any) -> Any:
        raise AssertionError("parsed at run time")

    monkeypatch.setattr(expressions, "parse", refuse)
    monkeypatch.setattr(expressions, "tokenize", refuse)
    assert codes(buy(CHAIN, "300", "gold")) == ["BASE", "GOLD", "RICH"]
    assert CHAIN.compiled[PLAN_KEY] is plan


def test_a_program_built_without_the_loader_compiles_on_first_use() -> None:
    raw = Program.model_validate(
        {
            "id": "default",
            "version": 1,
            "redeem_conditions": [{"code": "R"}],
            "earn_conditions": CONDITIONS,
            "rule_sets": {
                "TransactionAdd": [
                    {
                        "name": "s",
                        "rules": [
                            {"name": "r", "when": "transaction.amount > 5", "actions": [allocate("SMALL")]}
                        ],
                    }
                ]
            },
        }
    )
    assert PLAN_KEY not in raw.compiled
    assert codes(buy(raw, "10")) == ["SMALL"]
    assert isinstance(raw.compiled[PLAN_KEY], RulePlan)


def test_condition_holds_uses_the_plan_and_compiles_hand_built_rules() -> None:
    state = new_state("c1", "default")
    tx = activity("TransactionAdd", "t1", "2024-03-01T12:00:00Z", bill_number="B", amount="150")
    fx = Effects(state, tx, CHAIN, None)
    rule = CHAIN.rule_sets_for("TransactionAdd")[1].rules[1]
    assert engine_rules.condition_holds(fx, rule, tx)
    assert not engine_rules.condition_holds(fx, Rule(name="x", when="transaction.amount > 150"), tx)
    assert engine_rules.first_matching(fx, CHAIN.rule_sets_for("TransactionAdd")[1], tx) is rule


def test_other_modules_plug_their_own_action_handlers_in() -> None:
    prog = program_from(
        {
            "rule_sets": {
                "PointsRedemption": [
                    {
                        "name": "limits",
                        "rules": [
                            {
                                "name": "daily",
                                "when": "customer.points_redeemed_today < 500 and redemption.points <= 300",
                                "actions": [
                                    {"type": "redeem"},
                                    {"type": "notify", "channel": "push", "template": "redeemed"},
                                ],
                            },
                            {
                                "name": "over the limit",
                                "actions": [{"type": "notify", "channel": "sms", "template": "limit"}],
                            },
                        ],
                    }
                ]
            }
        }
    )
    state = new_state("c1", "default")
    state.redemptions["old"] = Redemption(
        "old", "old", datetime.fromisoformat("2024-03-01T08:00:00+00:00"), D(400), None
    )
    calls: list[tuple[str, str, int]] = []

    def redeem(fx: Effects, action: Any, rule: Rule, act: Any, index: int) -> None:
        calls.append((action.type, rule.name, index))

    def run(points: str) -> tuple[list[str], Effects]:
        request = activity("PointsRedemption", f"p{points}", "2024-03-01T12:00:00Z", points=points)
        fx = Effects(state, request, prog, None)
        fired = engine_rules.run_rule_sets(fx, "PointsRedemption", request, {"redeem": redeem})
        return [r.name for r in fired], fx

    fired, fx = run("50")
    assert fired == ["daily"] and calls == [("redeem", "daily", 0)]
    assert [n.template for n in fx.outcome.notifications] == ["redeemed"]
    fired, fx = run("400")
    assert fired == ["over the limit"] and [n.template for n in fx.outcome.notifications] == ["limit"]
    state.redemptions["more"] = Redemption(
        "more", "more", datetime.fromisoformat("2024-03-01T09:00:00+00:00"), D(100), None
    )
    assert run("50")[0] == ["over the limit"]  # 500 already redeemed today


def test_an_action_without_a_handler_is_an_error_not_a_silent_skip() -> None:
    prog = program_from(
        {
            "rule_sets": {
                "PointsRedemption": [{"name": "s", "rules": [{"name": "r", "actions": [{"type": "redeem"}]}]}]
            }
        }
    )
    request = activity("PointsRedemption", "p1", "2024-03-01T12:00:00Z", points="5")
    fx = Effects(new_state("c1", "default"), request, prog, None)
    with pytest.raises(ValueError, match="action 'redeem' is not valid"):
        engine_rules.run_rule_sets(fx, "PointsRedemption", request, {})
    assert fx.scope is None


def test_registration_and_customer_update_rule_sets() -> None:
    prog = program_from(
        {
            "earn_conditions": CONDITIONS,
            "rule_sets": {
                "Registration": [
                    {
                        "name": "welcome",
                        "rules": [
                            {
                                "name": "young",
                                "when": 'registration.custom_fields.age_group == "25-30"',
                                "actions": [allocate("BIG")],
                            },
                            {"name": "everyone", "actions": [allocate("SMALL")]},
                        ],
                    }
                ],
                "CustomerUpdate": [
                    {
                        "name": "profile",
                        "rules": [
                            {
                                "name": "email added",
                                "when": "update.custom_fields.email != null and customer.registered",
                                "actions": [allocate("RICH")],
                            }
                        ],
                    }
                ],
            },
        }
    )
    young = apply(
        None,
        activity("Registration", "r1", "2024-01-01T00:00:00Z", custom_fields={"age_group": "25-30"}),
        prog,
    )
    assert codes(young) == ["BIG"]
    assert codes(apply(None, activity("Registration", "r2", "2024-01-01T00:00:00Z"), prog)) == ["SMALL"]
    update = apply(
        young.state,
        activity("CustomerUpdate", "u1", "2024-01-02T00:00:00Z", custom_fields={"email": "a@b.c"}),
        prog,
    )
    assert codes(update) == ["RICH"]
    assert update.state.custom_fields == {"age_group": "25-30", "email": "a@b.c"}
    assert (
        codes(
            apply(
                None,
                activity("CustomerUpdate", "u2", "2024-01-02T00:00:00Z", custom_fields={"email": "a@b.c"}),
                prog,
            )
        )
        == []
    )
