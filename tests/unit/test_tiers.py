"""Tiers: thresholds on lifetime points or purchases, TierChange outputs, the TierChange rule sets."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from loyalty_stream.engine.core import apply
from loyalty_stream.engine.tiers import target_tier
from loyalty_stream.events.outputs import Channel, LedgerKind
from loyalty_stream.program.model import Program
from tests.unit.conftest import activity, program_from

D = Decimal
TIERS = [{"name": "bronze"}, {"name": "silver", "threshold": 1000}, {"name": "gold", "threshold": 5000}]
EARN = [
    {"code": "PCT", "allocation": {"type": "prorated", "percent": 10}},
    {"code": "GIFT", "allocation": {"type": "fixed", "points": {"silver": 200, "gold": 1000}}},
]


def program(
    policy: dict[str, Any] | None = None,
    tier_change: list[dict[str, Any]] | None = None,
    extra_rules: list[dict[str, Any]] | None = None,
) -> Program:
    rule_sets: dict[str, Any] = {
        "TransactionAdd": [
            {
                "name": "earn",
                "rules": [
                    *(extra_rules or []),
                    {"name": "base", "actions": [{"type": "allocate", "condition": "PCT"}]},
                ],
            }
        ]
    }
    if tier_change is not None:
        rule_sets["TierChange"] = tier_change
    return program_from(
        {"tiers": TIERS, "tier_policy": policy or {}, "earn_conditions": EARN, "rule_sets": rule_sets}
    )


def buy(prog: Program, amount: str, state: Any = None, event_id: str = "t1") -> Any:
    return apply(
        state,
        activity("TransactionAdd", event_id, "2024-02-01T10:00:00Z", bill_number=event_id, amount=amount),
        prog,
    )


def test_new_customers_start_in_the_lowest_tier() -> None:
    outcome = buy(program(), "10")
    assert outcome.state.tier == "bronze" and outcome.tier_changes == []


def test_crossing_a_lifetime_points_threshold_upgrades_with_output_and_notification() -> None:
    prog = program()
    first = buy(prog, "9000")  # 900 points
    assert first.state.tier == "bronze" and first.tier_changes == []
    second = buy(prog, "1000", first.state, "t2")  # 1000 lifetime points
    (change,) = second.tier_changes
    assert (change.from_tier, change.to_tier) == ("bronze", "silver")
    assert change.reason == "lifetime_points reached threshold" and change.cause_event_id == "t2"
    (note,) = second.notifications
    assert (note.channel, note.template, note.data) == (Channel.PUSH, "tier_upgraded", {"tier": "silver"})
    assert second.balance_change is not None and second.balance_change.tier == "silver"


def test_a_big_jump_goes_straight_to_the_highest_tier_reached() -> None:
    outcome = buy(program(), "60000")
    assert [c.to_tier for c in outcome.tier_changes] == ["gold"]


def test_lifetime_purchases_basis() -> None:
    prog = program({"basis": "lifetime_purchases"})
    assert buy(prog, "999").state.tier == "bronze"
    assert buy(prog, "1000").state.tier == "silver"


def test_no_automatic_upgrade_when_disabled_but_the_rule_action_still_upgrades() -> None:
    rule = {
        "name": "vip",
        "when": "transaction.amount >= 50000",
        "actions": [{"type": "upgrade_tier", "tier": "gold"}],
    }
    prog = program({"automatic": False}, extra_rules=[rule])
    assert buy(prog, "20000").state.tier == "bronze"
    outcome = buy(prog, "50000")
    assert [(c.to_tier, c.reason) for c in outcome.tier_changes] == [("gold", "rule vip")]
    # The if / else-if chain: the vip rule fired instead of the base earn.
    assert outcome.ledger == []


def test_tier_change_rule_set_runs_for_every_change() -> None:
    gift = [
        {
            "name": "gifts",
            "rules": [
                {
                    "name": "gift",
                    "when": 'tier_change.to_tier in ["silver", "gold"]',
                    "actions": [
                        {"type": "allocate", "condition": "GIFT"},
                        {"type": "notify", "channel": "email", "template": "tier_gift"},
                    ],
                }
            ],
        }
    ]
    prog = program(tier_change=gift)
    outcome = buy(prog, "10000")  # 1000 points -> silver -> +200 gift
    gifts = [e for e in outcome.ledger if e.condition_code == "GIFT"]
    assert [(e.amount, e.source_type, e.kind) for e in gifts] == [(D(200), "TransactionAdd", LedgerKind.EARN)]
    assert [c.to_tier for c in outcome.tier_changes] == ["silver"]
    assert [n.template for n in outcome.notifications] == ["tier_upgraded", "tier_gift"]
    assert outcome.state.current == D(1200)


def test_a_tier_change_bonus_can_cross_the_next_threshold() -> None:
    gift = [
        {"name": "gifts", "rules": [{"name": "gift", "actions": [{"type": "allocate", "condition": "GIFT"}]}]}
    ]
    prog = program_from(
        {
            "tiers": [
                {"name": "bronze"},
                {"name": "silver", "threshold": 1000},
                {"name": "gold", "threshold": 1100},
            ],
            "earn_conditions": EARN,
            "rule_sets": {
                "TransactionAdd": [
                    {
                        "name": "earn",
                        "rules": [{"name": "base", "actions": [{"type": "allocate", "condition": "PCT"}]}],
                    }
                ],
                "TierChange": gift,
            },
        }
    )
    outcome = buy(prog, "10000")  # 1000 -> silver; +200 gift -> 1200 -> gold; +1000 gift
    assert [(c.from_tier, c.to_tier) for c in outcome.tier_changes] == [
        ("bronze", "silver"),
        ("silver", "gold"),
    ]
    assert [e.amount for e in outcome.ledger if e.condition_code == "GIFT"] == [D(200), D(1000)]
    assert len({e.lot_id for e in outcome.ledger}) == 3
    assert outcome.state.tier == "gold" and outcome.state.current == D(2200)


def test_no_notification_when_the_policy_has_none() -> None:
    prog = program({"notify_channel": None})
    outcome = buy(prog, "10000")
    assert outcome.tier_changes and outcome.notifications == []


def test_target_tier() -> None:
    prog = program()
    assert target_tier(prog, "bronze", D(999), D(0)) is None
    assert target_tier(prog, "bronze", D(5000), D(0)) == "gold"
    assert target_tier(prog, "gold", D(99999), D(0)) is None
