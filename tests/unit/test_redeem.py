"""Redeem conditions (the document's example and every check), spending order, results and rule actions.

The builders at the top are shared by the other redemption/return/adjustment test modules.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Outcome
from loyalty_stream.engine.state import CustomerState, Lot, new_state
from loyalty_stream.events.outputs import LedgerKind, RedemptionStatus
from loyalty_stream.program.loader import ProgramError, parse_program
from loyalty_stream.program.model import Program

from .conftest import activity

D = Decimal


# Builders -----------------------------------------------------------------------------------------------

def earn_rules(*conditions: str) -> dict[str, Any]:
    return {"TransactionAdd": [{"name": "purchase", "rules": [{"name": "earn", "when": "true", "actions": [
        {"type": "allocate", "condition": c} for c in conditions]}]}]}


def redeem_rule_set(name: str = "redeem", condition: str | None = None, when: str = "true",
                    extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    action: dict[str, Any] = {"type": "redeem"}
    if condition is not None:
        action["condition"] = condition
    rule = {"name": f"{name} rule", "when": when, "actions": [*(extra or []), action]}
    return {"name": name, "rules": [rule]}


def make_program(**extra: Any) -> Program:
    """10% of the bill (2 decimals) as BASE, a 3-day delayed variant as LATE, one point worth 0.10."""
    data: dict[str, Any] = {
        "id": "default", "version": 1, "timezone": "UTC", "rounding": {"decimals": 2}, "point_value": "0.10",
        "tiers": [{"name": "bronze"}, {"name": "gold", "threshold": 1000000}],
        "earn_conditions": [
            {"code": "BASE", "allocation": {"type": "prorated", "percent": 10}},
            {"code": "LATE", "allocation": {"type": "prorated", "percent": 10}, "delay_days": 3},
        ],
        "redeem_conditions": [{"code": "R"}],
        "rule_sets": {**earn_rules("BASE"), "PointsRedemption": [redeem_rule_set()]},
    }
    data.update(extra)
    return parse_program(data)


class Customer:
    """Applies activities to one customer in order and keeps every outcome (event ids e1, e2, ...)."""

    def __init__(self, program: Program, state: CustomerState | None = None) -> None:
        self.program = program
        self.state = state or new_state("c1", "default")
        self.outcomes: list[Outcome] = []

    def do(self, kind: str, when: str, **payload: Any) -> Outcome:
        event = activity(kind, f"e{len(self.outcomes) + 1}", when, **payload)
        outcome = apply(self.state, event, self.program)
        self.state = outcome.state
        self.outcomes.append(outcome)
        return outcome

    def buy(self, bill: str, amount: str, when: str, **payload: Any) -> Outcome:
        return self.do("TransactionAdd", when, bill_number=bill, amount=amount, **payload)

    def redeem(self, points: str, when: str, **payload: Any) -> Outcome:
        return self.do("PointsRedemption", when, points=points, **payload)

    def adjust(self, direction: str, points: str, when: str, **payload: Any) -> Outcome:
        fields = {"reason": "goodwill for late delivery", "operator_id": "op-7", **payload}
        return self.do("ManualAdjustment", when, direction=direction, points=points, **fields)

    @property
    def ledger(self) -> list[Any]:
        return [entry for outcome in self.outcomes for entry in outcome.ledger]


def add_lot(state: CustomerState, lot_id: str, points: str, *, expires: str | None = None,
            earned: str = "2024-01-01T00:00:00+00:00", promised: bool = False, bill: str | None = None,
            item: str | None = None, available: str | None = None) -> Lot:
    """A lot built directly on the state (as if earned), so spending tests need no expiry rules."""
    lot = Lot(lot_id=lot_id, points=D(points), remaining=D(points), promised=promised,
              earned_at=datetime.fromisoformat(earned),
              available_at=None if available is None else datetime.fromisoformat(available),
              expires_at=None if expires is None else datetime.fromisoformat(expires),
              source_event_id=f"src-{lot_id}", bill_number=bill, line_item_id=item)
    state.lots.append(lot)
    state.lifetime_earned += lot.points
    return lot


def result_of(outcome: Outcome) -> Any:
    assert outcome.redemption_result is not None
    return outcome.redemption_result


# The document's example ---------------------------------------------------------------------------------

DOC_EXAMPLE = {"code": "DOC", "lifetime_points_required": 150, "multiples_of": 50,
               "max_points_per_transaction": 100}


def test_document_example_150_lifetime_points_multiples_of_50_at_most_100() -> None:
    c = Customer(make_program(redeem_conditions=[DOC_EXAMPLE]))
    c.buy("B1", "1000", "2024-01-02T10:00:00+00:00")  # 100 points, lifetime 100
    early = result_of(c.redeem("50", "2024-01-03T10:00:00+00:00"))
    assert (early.status, early.reason_code) == (RedemptionStatus.REJECTED, "lifetime_points_not_met")
    assert "150" in early.message and early.points_debited == 0
    c.buy("B2", "1000", "2024-01-04T10:00:00+00:00")  # lifetime 200, balance 200
    odd = result_of(c.redeem("75", "2024-01-05T10:00:00+00:00"))
    assert odd.reason_code == "not_a_multiple"
    big = result_of(c.redeem("150", "2024-01-05T11:00:00+00:00"))
    assert big.reason_code == "over_transaction_limit"
    ok = result_of(c.redeem("100", "2024-01-05T12:00:00+00:00"))
    assert ok.status == RedemptionStatus.ACCEPTED and ok.reason_code is None
    assert ok.points_debited == D("100.00") and ok.currency_value == D("10.0000")  # 100 x 0.10, exact
    assert ok.balance_after == D("100.00") and c.state.current == D("100.00")
    assert c.state.redeemed == D("100.00")
    assert sum(e.amount for e in c.outcomes[-1].ledger) == D("-100.00")


@pytest.mark.parametrize(("condition", "points", "reason"), [
    ({"min_points": 50}, "50", None),  # "if you set 50, a customer cannot redeem less than 50 points"
    ({"min_points": 50}, "49", "below_minimum"),
    ({"max_points_per_transaction": 100}, "100", None),  # "cannot redeem more than 100 points"
    ({"max_points_per_transaction": 100}, "101", "over_transaction_limit"),
    ({"multiples_of": 10}, "10", None),  # "only in multiples of 10 (10/20/30/40...)"
    ({"multiples_of": 10}, "40", None),
    ({"multiples_of": 10}, "25", "not_a_multiple"),
    ({"balance_required": 200}, "10", None),  # "minimum current points a customer should have"
    ({"balance_required": "200.01"}, "10", "balance_required_not_met"),
])
def test_document_field_examples_accept_at_the_bound_and_refuse_past_it(
    condition: dict[str, Any], points: str, reason: str | None,
) -> None:
    c = Customer(make_program(redeem_conditions=[{"code": "R", **condition}]))
    c.buy("B1", "2000", "2024-01-02T10:00:00+00:00")  # 200 points
    result = result_of(c.redeem(points, "2024-01-03T10:00:00+00:00"))
    assert result.reason_code == reason
    assert result.status == (RedemptionStatus.ACCEPTED if reason is None else RedemptionStatus.REJECTED)
    spent = D(points) if reason is None else D(0)
    assert result.points_debited == spent and c.state.current == D(200) - spent


# Every other check --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("condition", "points", "reason"), [
    ({"min_points": 50}, "49.99", "below_minimum"),
    ({"balance_required": 500}, "10", "balance_required_not_met"),
    ({"lifetime_purchases_required": "1000.01"}, "10", "lifetime_purchases_not_met"),
    ({}, "300.01", "insufficient_balance"),
    ({"multiples_of": "0.5"}, "10.25", "not_a_multiple"),
])
def test_each_condition_rejects_with_its_reason(condition: dict[str, Any], points: str, reason: str) -> None:
    c = Customer(make_program(redeem_conditions=[{"code": "R", **condition}]))
    c.buy("B1", "1000", "2024-01-02T10:00:00+00:00")
    c.buy("B2", "2000", "2024-01-02T11:00:00+00:00", line_items=[])  # balance 300, purchases 3000
    c.state.lifetime_purchases = D("1000")  # for the purchases check
    before = c.state.current
    outcome = c.redeem(points, "2024-01-03T10:00:00+00:00")
    result = result_of(outcome)
    assert (result.status, result.reason_code) == (RedemptionStatus.REJECTED, reason)
    assert result.message and result.points_debited == 0 and result.lots == []
    assert outcome.ledger == [] and outcome.rejected is None  # a normal answer, not a dead letter
    assert c.state.current == before and c.state.redemptions == {}


def test_conditions_that_pass_accept() -> None:
    condition = {"code": "R", "min_points": 50, "balance_required": 100, "lifetime_purchases_required": 1000,
                 "multiples_of": "0.5", "lifetime_points_required": 100}
    c = Customer(make_program(redeem_conditions=[condition]))
    c.buy("B1", "1000", "2024-01-02T10:00:00+00:00")
    assert result_of(c.redeem("50.5", "2024-01-03T10:00:00+00:00")).status == RedemptionStatus.ACCEPTED
    assert c.state.current == D("49.50")


def test_checks_run_in_a_fixed_order_eligibility_first() -> None:
    condition = {"code": "R", "lifetime_points_required": 1000, "min_points": 50, "multiples_of": 50}
    c = Customer(make_program(redeem_conditions=[condition]))
    assert result_of(c.redeem("7", "2024-01-03T10:00:00+00:00")).reason_code == "lifetime_points_not_met"


def test_requested_points_are_rounded_like_every_other_amount() -> None:
    c = Customer(make_program())
    c.buy("B1", "1000", "2024-01-02T10:00:00+00:00")
    assert result_of(c.redeem("10.005", "2024-01-03T10:00:00+00:00")).points_debited == D("10.01")
    tiny = result_of(c.redeem("0.001", "2024-01-03T11:00:00+00:00"))
    assert tiny.reason_code == "invalid_points"


def test_duplicate_redemption_id_is_rejected_and_debits_nothing() -> None:
    c = Customer(make_program())
    c.buy("B1", "1000", "2024-01-02T10:00:00+00:00")
    first = result_of(c.redeem("10", "2024-01-03T10:00:00+00:00", redemption_id="R-1"))
    again = result_of(c.redeem("10", "2024-01-03T10:01:00+00:00", redemption_id="R-1"))
    assert first.status == RedemptionStatus.ACCEPTED and first.redemption_id == "R-1"
    assert (again.reason_code, again.redemption_id) == ("duplicate_redemption_id", "R-1")
    assert c.state.current == D("90.00")


def test_redemption_id_defaults_to_the_event_id_and_result_carries_the_request() -> None:
    c = Customer(make_program())
    c.buy("B1", "1000", "2024-01-02T10:00:00+00:00")
    result = result_of(c.redeem("10", "2024-01-03T10:00:00+00:00", bill_number="POS-9"))
    assert result.redemption_id == "e2" and result.request_event_id == "e2"
    assert result.customer_id == "c1" and result.bill_number == "POS-9"
    assert c.state.redemptions["e2"].bill_number == "POS-9"


# Which condition applies --------------------------------------------------------------------------------

def test_tier_not_covered_is_no_redeem_condition() -> None:
    c = Customer(make_program(redeem_conditions=[{"code": "GOLD", "tiers": ["gold"]}]))
    c.buy("B1", "1000", "2024-01-02T10:00:00+00:00")
    result = result_of(c.redeem("10", "2024-01-03T10:00:00+00:00"))
    assert result.reason_code == "no_redeem_condition" and "bronze" in result.message


def test_per_tier_conditions_pick_the_first_covering_the_customer_tier() -> None:
    conditions = [{"code": "GOLD", "tiers": ["gold"], "min_points": 1},
                  {"code": "BRONZE", "tiers": ["bronze"], "min_points": 50}]
    program = make_program(redeem_conditions=conditions)
    bronze = Customer(program)
    bronze.buy("B1", "1000", "2024-01-02T10:00:00+00:00")
    assert result_of(bronze.redeem("10", "2024-01-03T10:00:00+00:00")).reason_code == "below_minimum"
    gold = Customer(program)
    gold.buy("B1", "1000", "2024-01-02T10:00:00+00:00")
    gold.state.tier = "gold"
    assert result_of(gold.redeem("10", "2024-01-03T10:00:00+00:00")).status == RedemptionStatus.ACCEPTED
    assert gold.outcomes[-1].ledger[0].condition_code == "GOLD"


def test_named_condition_for_another_tier_lets_a_later_rule_set_decide() -> None:
    conditions = [{"code": "GOLD", "tiers": ["gold"]}, {"code": "ANY"}]
    sets = [redeem_rule_set("gold only", "GOLD"), redeem_rule_set("everyone", "ANY")]
    c = Customer(make_program(redeem_conditions=conditions, rule_sets={**earn_rules("BASE"),
                                                                       "PointsRedemption": sets}))
    c.buy("B1", "1000", "2024-01-02T10:00:00+00:00")
    c.redeem("10", "2024-01-03T10:00:00+00:00")
    assert [e.condition_code for e in c.outcomes[-1].ledger] == ["ANY"]
    assert c.outcomes[-1].ledger[0].rule == "everyone rule"


def test_no_matching_rule_rejects_and_two_redeem_rule_sets_redeem_once() -> None:
    never = make_program(rule_sets={**earn_rules("BASE"),
                                    "PointsRedemption": [redeem_rule_set(when="false")]})
    c = Customer(never)
    c.buy("B1", "1000", "2024-01-02T10:00:00+00:00")
    assert result_of(c.redeem("10", "2024-01-03T10:00:00+00:00")).reason_code == "no_redeem_condition"
    twice = make_program(rule_sets={**earn_rules("BASE"),
                                    "PointsRedemption": [redeem_rule_set("a"), redeem_rule_set("b")]})
    d = Customer(twice)
    d.buy("B1", "1000", "2024-01-02T10:00:00+00:00")
    d.redeem("10", "2024-01-03T10:00:00+00:00")
    assert d.state.current == D("90.00") and len(d.state.redemptions) == 1


def test_without_redemption_rules_the_first_covering_condition_applies() -> None:
    conditions = [{"code": "R", "min_points": 5}]
    c = Customer(make_program(rule_sets=earn_rules("BASE"), redeem_conditions=conditions))
    c.buy("B1", "1000", "2024-01-02T10:00:00+00:00")
    assert result_of(c.redeem("4", "2024-01-03T10:00:00+00:00")).reason_code == "below_minimum"
    assert result_of(c.redeem("5", "2024-01-03T11:00:00+00:00")).status == RedemptionStatus.ACCEPTED


def test_rule_notifications_only_follow_an_accepted_redemption() -> None:
    notify = {"type": "notify", "channel": "sms", "template": "redeemed", "data": {"store": "S1"}}
    program = make_program(redeem_conditions=[{"code": "R", "min_points": 20}], rule_sets={
        **earn_rules("BASE"), "PointsRedemption": [redeem_rule_set(extra=[notify])]})
    c = Customer(program)
    c.buy("B1", "1000", "2024-01-02T10:00:00+00:00")
    assert c.redeem("10", "2024-01-03T10:00:00+00:00").notifications == []
    sent = c.redeem("20", "2024-01-03T11:00:00+00:00").notifications
    assert len(sent) == 1 and sent[0].template == "redeemed"
    assert sent[0].data == {"points": "20", "currency_value": "2", "redemption_id": "e3", "balance": "80",
                            "store": "S1"}


def test_program_rejects_a_condition_nothing_can_satisfy() -> None:
    with pytest.raises(ProgramError, match="min_points"):
        make_program(redeem_conditions=[{"code": "R", "min_points": 200, "max_points_per_transaction": 100}])


# Which points are spent ---------------------------------------------------------------------------------

def test_soonest_expiry_first_then_oldest_never_expiring_last_with_one_entry_per_lot() -> None:
    state = new_state("c1", "default")
    add_lot(state, "never", "100")
    add_lot(state, "june", "30", expires="2024-07-01T00:00:00+00:00")
    add_lot(state, "march-new", "20", expires="2024-04-01T00:00:00+00:00", earned="2024-02-01T00:00:00+00:00")
    add_lot(state, "march-old", "10", expires="2024-04-01T00:00:00+00:00", earned="2024-01-15T00:00:00+00:00")
    # 03:00+05:00 is 22:00 UTC the day before: the soonest of all, whatever its offset says
    add_lot(state, "offset", "5", expires="2024-04-01T03:00:00+05:00")
    add_lot(state, "promised", "1000", promised=True, available="2024-12-01T00:00:00+00:00")
    c = Customer(make_program(), state)
    outcome = c.redeem("60", "2024-03-01T10:00:00+00:00")
    assert [(e.lot_id, e.amount, e.balance_after) for e in outcome.ledger] == [
        ("offset", D("-5"), D("160")), ("march-old", D("-10"), D("150")), ("march-new", D("-20"), D("130")),
        ("june", D("-25"), D("105")),
    ]
    assert {e.kind for e in outcome.ledger} == {LedgerKind.REDEEM}
    assert {e.redemption_id for e in outcome.ledger} == {"e1"}
    assert outcome.ledger[3].expires_at == datetime.fromisoformat("2024-07-01T00:00:00+00:00")
    result = result_of(outcome)
    assert [(lot.lot_id, lot.points) for lot in result.lots] == [
        ("offset", D("5")), ("march-old", D("10")), ("march-new", D("20")), ("june", D("25"))]
    assert [(x.lot_id, x.points) for x in c.state.redemptions["e1"].consumed] == [
        (lot.lot_id, lot.points) for lot in result.lots]
    assert c.state.promised == D("1000")  # promised points are never spent


def test_expiry_after_a_redemption_takes_only_what_is_left() -> None:
    state = new_state("c1", "default")
    add_lot(state, "a", "100", expires="2024-04-01T00:00:00+00:00")
    c = Customer(make_program(), state)
    c.redeem("60", "2024-03-01T10:00:00+00:00")
    later = c.buy("B1", "0", "2024-04-02T10:00:00+00:00")
    expired = [e for e in later.ledger if e.kind == LedgerKind.EXPIRE]
    assert [(e.lot_id, e.amount) for e in expired] == [("a", D("-40"))]
    assert c.state.expired == D("40") and c.state.current == D("0")


def test_expired_points_cannot_be_redeemed() -> None:
    state = new_state("c1", "default")
    add_lot(state, "a", "100", expires="2024-04-01T00:00:00+00:00")
    c = Customer(make_program(), state)
    result = result_of(c.redeem("10", "2024-04-01T00:00:00+00:00"))
    assert result.reason_code == "insufficient_balance"
    assert [e.kind for e in c.outcomes[-1].ledger] == [LedgerKind.EXPIRE]
