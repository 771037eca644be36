"""Per-customer caps of a rule set: total points (per period), source value, sum of tender amounts, tracker
value; counted in event time, recorded on the lots, releasable by returns."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from loyalty_stream.engine.caps import release_caps
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Outcome
from loyalty_stream.engine.state import CustomerState, state_from_dict, state_to_dict
from loyalty_stream.events.outputs import LedgerKind
from loyalty_stream.program.model import Program
from tests.unit.conftest import activity, program_from

D = Decimal


def program(caps: dict[str, Any], *actions: dict[str, Any], percent: Any = 10, **extra: Any) -> Program:
    data: dict[str, Any] = {
        "timezone": "Asia/Kolkata",
        "rounding": {"decimals": 2},
        "earn_conditions": [
            {"code": "PCT", "allocation": {"type": "prorated", "percent": percent}},
            {"code": "FIX", "allocation": {"type": "fixed", "points": 30}},
        ],
        "rule_sets": {
            "TransactionAdd": [
                {
                    "name": "set1",
                    "caps": caps,
                    "rules": [
                        {"name": "r", "actions": list(actions) or [{"type": "allocate", "condition": "PCT"}]}
                    ],
                }
            ]
        },
    }
    data.update(extra)
    return program_from(data)


class Customer:
    """Feeds one customer's activities through the engine, keeping the state between them."""

    def __init__(self, prog: Program) -> None:
        self.program = prog
        self.state: CustomerState | None = None
        self.n = 0

    def buy(self, amount: str, when: str = "2024-10-10T10:00:00+05:30", **payload: Any) -> Outcome:
        self.n += 1
        outcome = apply(
            self.state,
            activity(
                "TransactionAdd", f"t{self.n}", when, bill_number=f"B{self.n}", amount=amount, **payload
            ),
            self.program,
        )
        self.state = outcome.state
        return outcome


def earned(outcome: Outcome) -> Decimal:
    return sum((e.amount for e in outcome.ledger if e.kind == LedgerKind.EARN), D(0))


# Total points --------------------------------------------------------------------------------------


def test_total_points_cap_limits_what_a_customer_earns_across_the_set() -> None:
    prog = program(
        {"total_points": 100},
        {"type": "allocate", "condition": "PCT"},
        {"type": "allocate", "condition": "FIX"},
    )
    c = Customer(prog)
    first = c.buy("500")  # 50 + 30
    assert earned(first) == D(80)
    second = c.buy("500")  # 50 wanted, 20 room left; then FIX finds no room
    (entry,) = [e for e in second.ledger if e.kind == LedgerKind.EARN]
    assert entry.condition_code == "PCT" and entry.amount == D(20) and entry.desired_amount == D(50)
    assert any("FIX" in s and "capped to 0 by total_points cap" in s for s in second.skipped)
    assert earned(c.buy("5000")) == D(0)
    assert c.state is not None and c.state.counters == {"cap:TransactionAdd:set1:points:lifetime": D(100)}


def test_total_points_cap_per_calendar_month_in_event_time_and_program_zone() -> None:
    prog = program({"total_points": 100, "total_points_period": "calendar_month"})
    c = Customer(prog)
    assert earned(c.buy("800", "2024-10-31T20:00:00+05:30")) == D(80)
    # 1 Nov 00:30 in Kolkata is still 31 Oct in UTC: a new month in the program's zone.
    assert earned(c.buy("800", "2024-10-31T19:00:00+00:00")) == D(80)
    assert earned(c.buy("800", "2024-11-15T10:00:00+05:30")) == D(20)
    # A late event from October counts against October.
    late = c.buy("800", "2024-10-20T10:00:00+05:30")
    assert earned(late) == D(20) and late.ledger[0].desired_amount == D(80)
    assert c.state is not None and c.state.counters == {
        "cap:TransactionAdd:set1:points:calendar_month:2024-10-01": D(100),
        "cap:TransactionAdd:set1:points:calendar_month:2024-11-01": D(100),
    }


def test_counters_are_kept_for_a_retention_period_and_very_late_events_never_exceed_a_cap() -> None:
    prog = program({"total_points": 100, "total_points_period": "day"})
    c = Customer(prog)
    c.buy("10", "2024-01-01T10:00:00+05:30")
    c.buy("10", "2024-06-01T10:00:00+05:30")
    assert c.state is not None and len(c.state.counters) == 2  # kept: late events still count right
    c.buy("10", "2025-02-10T10:00:00+05:30")  # opens a counter 406 days after 1 Jan 2024 ended
    assert sorted(c.state.counters) == [
        "cap:TransactionAdd:set1:points:day:2024-06-01",
        "cap:TransactionAdd:set1:points:day:2025-02-10",
    ]
    # A purchase dated 1 Jan 2024 arriving now cannot be checked against its (dropped) counter: no award.
    late = c.buy("10", "2024-01-01T12:00:00+05:30")
    assert late.ledger == [] and any("capped to 0" in s for s in late.skipped)
    assert earned(c.buy("10", "2024-06-01T12:00:00+05:30")) == D(1)  # within retention: counted normally


def test_the_cap_is_floored_to_the_rounding_so_it_is_never_exceeded() -> None:
    prog = program({"total_points": D("10.005")}, percent=100)
    c = Customer(prog)
    assert earned(c.buy("50")) == D("10.00")
    assert earned(c.buy("50")) == D(0)


def test_caps_on_line_item_lots_split_the_capped_total_exactly() -> None:
    prog = program({"total_points": 25}, {"type": "allocate", "condition": "PCT", "line_items": {}})
    c = Customer(prog)
    outcome = c.buy(
        "300",
        line_items=[
            {"item_id": "a", "sku": "A", "amount": "100"},
            {"item_id": "b", "sku": "B", "amount": "200"},
        ],
    )
    entries = {e.line_item_id: e for e in outcome.ledger}
    assert entries["a"].amount + entries["b"].amount == D(25)
    assert (entries["a"].desired_amount, entries["b"].desired_amount) == (D(10), D(20))
    assert (entries["a"].amount, entries["b"].amount) == (D("8.33"), D("16.67"))


# Source value --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bill", "points", "desired"), [("3000", "300", None), ("8000", "500", "800")])
def test_source_value_cap_gives_x_percent_of_the_lower_of_bill_and_5000(
    bill: str, points: str, desired: str | None
) -> None:
    outcome = Customer(program({"source_value": 5000})).buy(bill)
    (entry,) = outcome.ledger
    assert entry.amount == D(points)
    assert entry.desired_amount == (None if desired is None else D(desired))


def test_source_value_cap_does_not_touch_fixed_points() -> None:
    outcome = Customer(program({"source_value": 10}, {"type": "allocate", "condition": "FIX"})).buy("8000")
    assert earned(outcome) == D(30)


# Sum of tender amounts -----------------------------------------------------------------------------

ABC = {"modes": ["ABC_CREDIT_CARD"], "limit": 10000, "period": "calendar_year"}


def card(amount: str, cash: str = "0") -> list[dict[str, str]]:
    tenders = [{"mode": "ABC_CREDIT_CARD", "amount": amount}]
    return tenders + ([{"mode": "CASH", "amount": cash}] if cash != "0" else [])


def test_abc_card_earns_only_up_to_10000_cumulative() -> None:
    prog = program(
        {"tender_amount": ABC}, {"type": "allocate", "condition": "PCT", "tender_modes": ["ABC_CREDIT_CARD"]}
    )
    c = Customer(prog)
    assert earned(c.buy("6000", tenders=card("6000"))) == D(600)
    second = c.buy("6000", tenders=card("6000"))  # only 4000 of card spend left
    assert earned(second) == D(400) and second.ledger[0].desired_amount == D(600)
    assert earned(c.buy("6000", tenders=card("6000"))) == D(0)
    # A new calendar year (event time) opens a new allowance.
    assert earned(c.buy("1000", "2025-01-01T00:10:00+05:30", tenders=card("1000"))) == D(100)
    assert c.state is not None
    key = "cap:TransactionAdd:set1:tender:ABC_CREDIT_CARD:calendar_year:"
    assert c.state.counters[key + "2024-01-01"] == D(10000)
    assert c.state.counters[key + "2025-01-01"] == D(1000)


def test_tender_cap_leaves_other_payment_modes_earning() -> None:
    prog = program({"tender_amount": ABC})
    c = Customer(prog)
    c.buy("9900", tenders=card("9900"))
    outcome = c.buy("1000", tenders=card("400", cash="600"))  # 100 of card allowance left: earns on 700
    assert earned(outcome) == D(70) and outcome.ledger[0].desired_amount == D(100)


def test_tender_cap_with_an_unroller_on_the_same_card_earns_only_on_the_allowance_left() -> None:
    prog = program(
        {"tender_amount": ABC}, {"type": "allocate", "condition": "PCT", "tender_modes": ["ABC_CREDIT_CARD"]}
    )
    c = Customer(prog)
    assert earned(c.buy("12000", tenders=card("6000", cash="6000"))) == D(600)  # the card half
    second = c.buy("12000", tenders=card("6000", cash="6000"))  # 4000 of card allowance left
    assert earned(second) == D(400) and second.ledger[0].desired_amount == D(600)
    third = c.buy("12000", tenders=card("6000", cash="6000"))  # none left; the cash half is not this action's
    assert third.ledger == [] and any("CARD" not in s and "PCT" in s for s in third.skipped)


def test_tender_usage_is_not_charged_when_the_set_awards_nothing() -> None:
    gold_only = program(
        {"tender_amount": ABC},
        percent={"gold": 10},
        tiers=[{"name": "base"}, {"name": "gold", "threshold": 1000000}],
    )
    c = Customer(gold_only)
    assert c.buy("100", tenders=card("100")).ledger == []
    assert c.state is not None and c.state.counters == {}


# Tracker value -------------------------------------------------------------------------------------

FUEL = {"tracker": {"field": "litres", "limit": 1000, "period": "calendar_month"}}


def fuel(item_id: str, amount: str, litres: Any) -> dict[str, Any]:
    return {"item_id": item_id, "sku": "PETROL", "amount": amount, "custom_fields": {"litres": litres}}


def test_tracker_gives_points_only_for_the_first_1000_litres() -> None:
    prog = program(
        FUEL, {"type": "allocate", "condition": "PCT", "line_items": {"use_proportions": False}}, percent=1
    )
    c = Customer(prog)
    assert earned(c.buy("90000", line_items=[fuel("1", "90000", 900)])) == D(900)
    second = c.buy(
        "20000", line_items=[fuel("1", "20000", 200), {"item_id": "2", "sku": "OIL", "amount": "500"}]
    )
    entries = {e.line_item_id: e for e in second.ledger}
    assert entries["1"].amount == D(100) and entries["1"].desired_amount == D(200)  # 100 of 200 litres
    assert entries["2"].amount == D(5) and entries["2"].desired_amount is None  # not tracked: unaffected
    assert earned(c.buy("10000", line_items=[fuel("1", "10000", 100)])) == D(0)
    assert earned(c.buy("10000", "2024-11-01T09:00:00+05:30", line_items=[fuel("1", "10000", 100)])) == D(100)


def test_tracker_with_a_non_numeric_value_earns_nothing_for_that_item_and_says_why() -> None:
    prog = program(FUEL, {"type": "allocate", "condition": "PCT", "line_items": {"use_proportions": False}})
    outcome = Customer(prog).buy(
        "300", line_items=[fuel("1", "100", "lots"), {"item_id": "2", "sku": "OIL", "amount": "200"}]
    )
    assert {e.line_item_id: e.amount for e in outcome.ledger} == {"2": D(20)}
    assert any("field 'litres' is 'lots'" in s for s in outcome.skipped)


def test_tracker_on_a_bill_level_allocation_scales_the_bill() -> None:
    prog = program({"tracker": {"field": "litres", "limit": 50}}, percent=10)
    outcome = Customer(prog).buy(
        "200", line_items=[fuel("1", "100", 100), {"item_id": "2", "sku": "X", "amount": "100"}]
    )
    assert earned(outcome) == D(15)  # half the fuel line is allowed: 150 of 200 earns


# Bookkeeping: cap keys on lots, release by returns, state codec ------------------------------------


def test_lots_record_the_counters_they_used_and_release_gives_them_back() -> None:
    prog = program(
        {"total_points": 1000, "total_points_period": "calendar_month", "tender_amount": ABC},
        {"type": "allocate", "condition": "PCT", "line_items": {}},
    )
    c = Customer(prog)
    outcome = c.buy(
        "300",
        tenders=card("300"),
        line_items=[
            {"item_id": "a", "sku": "A", "amount": "100"},
            {"item_id": "b", "sku": "B", "amount": "200"},
        ],
    )
    state = outcome.state
    points_key = "cap:TransactionAdd:set1:points:calendar_month:2024-10-01"
    tender_key = "cap:TransactionAdd:set1:tender:ABC_CREDIT_CARD:calendar_year:2024-01-01"
    lots = {lot.line_item_id: lot for lot in state.lots}
    assert lots["a"].cap_keys == (points_key, f"{tender_key}=100")
    assert lots["b"].cap_keys == (points_key, f"{tender_key}=200")
    assert state.counters == {points_key: D(30), tender_key: D(300)}

    release_caps(state, lots["b"], D(10))  # half of item b's 20 points come back
    assert state.counters == {points_key: D(20), tender_key: D(200)}
    release_caps(state, lots["b"], D(10))
    release_caps(state, lots["a"], D(10))
    assert state.counters == {}
    release_caps(state, lots["a"], D(10))  # nothing left to release: no negative counters
    assert state.counters == {}


def test_cap_usage_survives_the_state_codec() -> None:
    prog = program({"total_points": 100, "tender_amount": ABC})
    c = Customer(prog)
    outcome = c.buy("300", tenders=card("300"))
    restored = state_from_dict(state_to_dict(outcome.state))
    assert restored.counters == outcome.state.counters
    assert [lot.cap_keys for lot in restored.lots] == [lot.cap_keys for lot in outcome.state.lots]
    assert restored == outcome.state


def test_source_caps_are_transaction_only() -> None:
    with pytest.raises(ValueError, match="apply to TransactionAdd only"):
        program_from(
            {
                "earn_conditions": [{"code": "C", "allocation": {"type": "fixed", "points": 1}}],
                "rule_sets": {
                    "Registration": [
                        {
                            "name": "s",
                            "caps": {"source_value": 10},
                            "rules": [{"name": "r", "actions": [{"type": "allocate", "condition": "C"}]}],
                        }
                    ]
                },
            }
        )


def test_total_points_cap_on_registration() -> None:
    prog = program_from(
        {
            "earn_conditions": [{"code": "C", "allocation": {"type": "fixed", "points": 80}}],
            "rule_sets": {
                "CustomerUpdate": [
                    {
                        "name": "s",
                        "caps": {"total_points": 100},
                        "rules": [{"name": "r", "actions": [{"type": "allocate", "condition": "C"}]}],
                    }
                ]
            },
        }
    )
    first = apply(None, activity("CustomerUpdate", "u1", "2024-01-01T00:00:00Z"), prog)
    second = apply(first.state, activity("CustomerUpdate", "u2", "2024-01-02T00:00:00Z"), prog)
    assert [e.amount for e in second.ledger] == [D(20)]
