"""Event points (Fanfare): the catalogue by category, overrides, 0 disables, unknown names rejected."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from loyalty_stream.engine.core import apply
from loyalty_stream.events.outputs import LedgerKind
from loyalty_stream.program.event_points import CATALOGUE, CATEGORY_OF, DEFAULT_POINTS, EventPoints
from loyalty_stream.program.model import Program
from tests.unit.conftest import activity, program_from

D = Decimal


def program(**event_points: Any) -> Program:
    return program_from(
        {
            "event_points": event_points,
            "timezone": "Europe/Paris",
            "expiry_conditions": [{"code": "D30", "unit": "days", "value": 30}],
        }
    )


def engage(prog: Program, name: str, count: int = 1, state: Any = None, event_id: str = "e1") -> Any:
    return apply(
        state,
        activity("Engagement", event_id, "2024-04-10T10:00:00+00:00", event_name=name, count=count),
        prog,
    )


def test_catalogue_covers_the_documented_categories() -> None:
    assert set(CATALOGUE) == {
        "engagement",
        "conversion",
        "social_message",
        "queue",
        "draw",
        "auction",
        "appointment",
        "waitlist",
    }
    examples = {
        "engagement": {"page_view", "product_view", "product_click", "search"},
        "conversion": {"add_to_cart", "view_cart", "begin_checkout", "purchase"},
        "social_message": {"qr_scan", "message_open", "message_read", "message_click"},
        "queue": {"queue_entry", "queue_admission", "queue_completion"},
        "draw": {"draw_entry", "draw_win", "draw_completion"},
        "auction": {"bid_placed", "bid_won"},
        "appointment": {
            "appointment_booking",
            "appointment_confirmation",
            "appointment_check_in",
            "appointment_completion",
        },
        "waitlist": {"waitlist_entry"},
    }
    assert {category: set(events) for category, events in CATALOGUE.items()} == examples
    assert CATEGORY_OF["bid_won"] == "auction"


def test_catalogue_points_times_count_as_an_event_lot() -> None:
    outcome = engage(program(), "add_to_cart", count=3)
    (entry,) = outcome.ledger
    assert entry.kind == LedgerKind.EARN and entry.amount == D(15)  # default 5 x 3
    assert entry.condition_code == "event:add_to_cart" and entry.source_type == "Engagement"
    (lot,) = outcome.state.lots
    assert lot.origin == "event" and lot.points == D(15)
    assert outcome.state.lifetime_earned == D(15) and outcome.rejected is None


def test_a_program_stores_only_overrides_and_uses_defaults_for_the_rest() -> None:
    prog = program(overrides={"page_view": 3})
    assert prog.event_points.model_dump(exclude_defaults=True) == {"overrides": {"page_view": D(3)}}
    assert engage(prog, "page_view").ledger[0].amount == D(3)
    assert engage(prog, "bid_won").ledger[0].amount == DEFAULT_POINTS["bid_won"]
    table = prog.event_points.by_category()
    assert table["engagement"]["page_view"] == D(3) and table["auction"]["bid_won"] == D(25)


def test_zero_disables_an_event_but_it_is_still_a_valid_activity() -> None:
    prog = program_from(
        {
            "event_points": {"overrides": {"purchase": 0}},
            "earn_conditions": [{"code": "X", "allocation": {"type": "fixed", "points": 2}}],
            "rule_sets": {
                "Engagement": [
                    {
                        "name": "s",
                        "rules": [
                            {
                                "name": "purchase",
                                "when": 'engagement.event_name == "purchase"',
                                "actions": [{"type": "notify", "channel": "push", "template": "thanks"}],
                            }
                        ],
                    }
                ]
            },
        }
    )
    outcome = engage(prog, "purchase")
    assert outcome.ledger == [] and outcome.rejected is None
    assert [n.template for n in outcome.notifications] == ["thanks"]


def test_unknown_event_name_is_rejected_before_any_change() -> None:
    before = engage(program(), "page_view").state
    outcome = engage(program(), "page_vue", state=before, event_id="e2")
    assert outcome.rejected is not None
    assert "event_name" in outcome.rejected and "'page_vue'" in outcome.rejected
    assert outcome.ledger == [] and outcome.notifications == []
    assert outcome.state.current == before.current and len(outcome.state.lots) == 1


def test_unknown_or_negative_overrides_are_load_errors() -> None:
    with pytest.raises(ValueError, match="unknown event names"):
        EventPoints(overrides={"page_vue": D(1)})
    with pytest.raises(ValueError, match="not negative"):
        EventPoints(overrides={"page_view": D(-1)})


def test_event_points_expire_and_can_be_delayed() -> None:
    prog = program(expiry="D30", delay_days=2)
    outcome = engage(prog, "bid_won")
    (entry,) = outcome.ledger
    assert entry.kind == LedgerKind.PROMISE and entry.amount == D(25)
    assert entry.available_at == datetime.fromisoformat("2024-04-13T00:00:00+02:00")  # morning after 10 + 2
    (lot,) = outcome.state.lots
    assert lot.expiry_code == "D30" and lot.expires_at is not None
    assert outcome.state.promised == D(25) and outcome.state.current == D(0)


def test_engagement_rule_sets_run_after_the_event_points() -> None:
    prog = program_from(
        {
            "earn_conditions": [{"code": "BONUS", "allocation": {"type": "fixed", "points": 10}}],
            "rule_sets": {
                "Engagement": [
                    {
                        "name": "bonus",
                        "rules": [
                            {
                                "name": "big auction",
                                "when": 'engagement.category == "auction" and customer.current_points >= 25',
                                "actions": [{"type": "allocate", "condition": "BONUS"}],
                            }
                        ],
                    }
                ]
            },
        }
    )
    outcome = engage(prog, "bid_won")
    assert [(e.condition_code, e.amount) for e in outcome.ledger] == [
        ("event:bid_won", D(25)),
        ("BONUS", D(10)),
    ]
    assert [(e.condition_code, e.amount) for e in engage(prog, "page_view").ledger] == [
        ("event:page_view", D(1))
    ]


def test_event_points_are_rounded_like_every_issued_amount() -> None:
    prog = program_from(
        {
            "rounding": {"decimals": 0, "strategy": "floor"},
            "event_points": {"overrides": {"page_view": "0.3"}},
        }
    )
    assert engage(prog, "page_view", count=5).ledger[0].amount == D(1)  # 1.5 floored


def test_delayed_event_points_cannot_mix_with_direct_engagement_allocations() -> None:
    with pytest.raises(ValueError, match=r"cannot mix direct allocation \(BONUS"):
        program_from(
            {
                "event_points": {"delay_days": 3},
                "earn_conditions": [{"code": "BONUS", "allocation": {"type": "fixed", "points": 10}}],
                "rule_sets": {
                    "Engagement": [
                        {
                            "name": "s",
                            "rules": [{"name": "r", "actions": [{"type": "allocate", "condition": "BONUS"}]}],
                        }
                    ]
                },
            }
        )
