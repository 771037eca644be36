"""The earn path's values read once give what the plain reads give: the program's facts (lowest tier, default
expiry), event-date expiry ends kept per program in its facts, the scope's key head, the set's tender and tracker
caps passed in, and the capped points compared only when caps gave another source."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from loyalty_stream.engine import expiry, rules
from loyalty_stream.engine.caps import SetScope
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.facts import facts
from loyalty_stream.engine.ids import derive_id_of
from loyalty_stream.engine.line_items import ONE, tender_amounts
from loyalty_stream.engine.state import ZERO, new_state
from loyalty_stream.program.expressions import field_value
from loyalty_stream.program.model import Program
from loyalty_stream.program.rules import rule_plan
from tests.unit.conftest import activity, program_from

D = Decimal

TIERS = [{"name": "bronze", "threshold": 0}, {"name": "silver", "threshold": 100}]
EXPIRIES: list[dict[str, Any]] = [
    {"code": "DAYS", "based_on": "event_date", "unit": "days", "value": {"bronze": 10, "silver": 20}},
    {"code": "MONTHS", "based_on": "event_date", "unit": "months", "value": 2},
]


def purchase(event_id: str = "e1", when: str = "2024-05-01T10:00:00+05:30", **payload: Any) -> Any:
    payload = {"bill_number": f"b-{event_id}", "amount": "100", **payload}
    return activity("TransactionAdd", event_id, when, **payload)


@pytest.mark.parametrize("data", [{}, {"tiers": TIERS, "expiry_conditions": EXPIRIES, "default_expiry": "MONTHS"}])
def test_facts_hold_the_programs_lowest_tier_and_default_expiry(data: dict[str, Any]) -> None:
    program = program_from(data)
    known = facts(program)
    assert known.lowest_tier == program.lowest_tier and known.default_expiry == program.default_expiry
    fx = Effects(new_state("c1", "default"), purchase(), program, None)
    assert expiry._tier(fx) == program.lowest_tier
    fx.state.tier = "silver"
    assert expiry._tier(fx) == "silver"


def test_event_ends_are_kept_per_program_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    program = program_from({"tiers": TIERS, "expiry_conditions": EXPIRIES, "default_expiry": "DAYS"})
    longer = program_from({"tiers": TIERS, "default_expiry": "DAYS",
                           "expiry_conditions": [EXPIRIES[0] | {"value": 30}, EXPIRIES[1]]})
    copy = program.model_copy(update={"default_expiry": "MONTHS"})  # shares `compiled`: its facts are its own
    assert copy.compiled is program.compiled
    for day in range(1, 8):
        for prog in (program, longer, copy, program):
            for tier in ("bronze", "silver"):
                fx = Effects(new_state("c1", "default"), purchase(f"e{day}", f"2024-05-0{day}T10:00:00+05:30"),
                             prog, None)
                fx.state.tier = tier
                for code in (None, "DAYS", "MONTHS"):
                    named = code or prog.default_expiry
                    assert named is not None
                    want = expiry.compute_expiry(prog.expiry_condition(named), earned=fx.time, now=fx.time,
                                                 tier=tier, zone=prog.zone, state=fx.state)
                    assert expiry.assign_expiry(fx, code) == (want, named, False), (day, tier, code)
    assert facts(copy).default_expiry == "MONTHS" and facts(copy) is not facts(program)
    assert facts(longer).event_ends is not facts(program).event_ends
    monkeypatch.setattr(expiry, "_EVENT_ENDS_LIMIT", 3)
    fx = Effects(new_state("c1", "default"), purchase("e9", "2024-06-01T10:00:00+05:30"), program, None)
    expiry.assign_expiry(fx, "MONTHS")
    assert len(facts(program).event_ends) <= 3  # cleared when full (a pure engine sees the patched bound)


def cap_program(caps: dict[str, Any]) -> Program:
    return program_from({
        "earn_conditions": [{"code": "PCT", "allocation": {"type": "prorated", "percent": 10}}],
        "rule_sets": {"TransactionAdd": [
            {"name": "first", "caps": caps, "rules": [
                {"name": "r0", "actions": [
                    {"type": "allocate", "condition": "PCT", "line_items": {"use_proportions": True}},
                    {"type": "notify", "channel": "push", "template": "t"},
                    {"type": "allocate", "condition": "PCT"}]}]},
            {"name": "second", "rules": [{"name": "r1", "actions": [{"type": "allocate", "condition": "PCT"}]}]},
        ]},
    })


ITEMS = [{"item_id": "1", "sku": "A", "amount": "60", "custom_fields": {"litres": 30}},
         {"item_id": "2", "sku": "B", "amount": "40"},
         {"item_id": "3", "sku": "C", "amount": "0.5", "custom_fields": {"litres": "lots"}}]
TENDERS = [{"mode": "CARD", "amount": "70"}, {"mode": "CASH", "amount": "30"}]


def test_lot_and_output_keys_start_with_the_scope_prefix_and_set_name() -> None:
    program = cap_program({})
    deal = purchase(line_items=ITEMS)
    outcome = apply(None, deal, program)
    sets = {"r0": "first", "r1": "second"}
    positions = {("r0", None): 2, ("r0", "1"): 0, ("r0", "2"): 0, ("r0", "3"): 0, ("r1", None): 0}
    credits = [entry for entry in outcome.ledger if entry.rule is not None]
    assert len(credits) == 5
    for entry in credits:
        assert entry.rule is not None
        key = ("TransactionAdd", sets[entry.rule], entry.rule, str(positions[(entry.rule, entry.line_item_id)]),
               "PCT", entry.line_item_id or "")
        assert entry.lot_id == derive_id_of("lot", (deal.event_id, *key))
    fx = Effects(new_state("c1", "default"), deal, program, None)
    for compiled in rule_plan(program).by_activity["TransactionAdd"]:
        for prefix in [("TransactionAdd",), ("TierChange", "gold")]:
            scope = fx.scope = SetScope(compiled, deal, prefix)
            assert scope.key_head == (*prefix, compiled.name)
            rule = compiled.rules[0].rule
            assert rules._output_key(fx, rule, 1) == (*prefix, compiled.name, rule.name, "1")


def plain_tender(program: Program, deal: Any, counters: dict[str, Decimal]) -> tuple[Decimal, Decimal, Decimal]:
    """(counted, excess, factor) of the set's tender cap, read from the program and the bill as written."""
    cap = program.rule_sets["TransactionAdd"][0].caps.tender_amount
    assert cap is not None
    payload = deal.payload
    paid = tender_amounts(payload, cap.modes)
    room = max(ZERO, cap.limit - next(iter(counters.values()), ZERO))
    counted = min(paid, room)
    excess = min(paid - counted, payload.amount)
    factor = ONE if payload.amount <= ZERO else (payload.amount - excess) / payload.amount
    return counted, excess, factor



def only_amount_cap(program: Program, deal: Any, key: str, used: str | None) -> tuple[Effects, Any]:
    """The first rule set's one amount cap for `deal`, with `used` already counted under `key`."""
    fx = Effects(new_state("c1", "default"), deal, program, None)
    if used is not None:
        fx.state.counters[key] = D(used)
    scope = SetScope(rule_plan(program).by_activity["TransactionAdd"][0], deal, ("TransactionAdd",))
    (cap,) = scope.amount_caps(fx)
    return fx, cap


@pytest.mark.parametrize("used", [None, "0", "25", "50", "80"])
@pytest.mark.parametrize("amount", ["100", "0"])
def test_tender_cap_passed_in_is_the_sets_own(used: str | None, amount: str) -> None:
    program = cap_program({"tender_amount": {"modes": ["CARD"], "limit": 80, "period": "lifetime"}})
    deal = purchase(amount=amount, tenders=TENDERS)
    key = "cap:TransactionAdd:first:tender:CARD:lifetime"
    fx, cap = only_amount_cap(program, deal, key, used)
    counted, excess, factor = plain_tender(program, deal, dict(fx.state.counters))
    assert (cap.key, cap.counted, cap.excess, cap.factors, cap.modes) == (key, counted, excess, {None: factor},
                                                                          frozenset({"CARD"}))


@pytest.mark.parametrize("used", [None, "10", "45"])
def test_tracker_cap_passed_in_is_the_sets_own(used: str | None) -> None:
    program = cap_program({"tracker": {"field": "litres", "limit": 50, "period": "lifetime"}})
    deal = purchase(line_items=ITEMS)
    key = "cap:TransactionAdd:first:tracker:litres:lifetime"
    _, cap = only_amount_cap(program, deal, key, used)
    room = 50 - D(used or 0)
    allowed = min(D(30), room)
    assert cap.key == key and cap.counted == allowed
    weighted = D(60) * (allowed / D(30)) + D(40)
    assert cap.factors == {"1": allowed / D(30), "2": D(1), "3": ZERO, None: weighted / D("100.5")}
    assert len(cap.notes) == 1 and "'lots'" in cap.notes[0] and field_value(30) == D(30)


@pytest.mark.parametrize(("limit", "cut"), [("1000", False), ("70", False), ("35", True), ("0.01", True)])
def test_capped_points_are_compared_only_when_caps_gave_another_source(limit: str, cut: bool) -> None:
    """A tender cap with room left builds another (equal) source: nothing is cut, no note; one without room
    cuts the points and says so, with the wanted amount on the lots."""
    program = cap_program({"tender_amount": {"modes": ["CARD"], "limit": limit, "period": "lifetime"}})
    outcome = apply(None, purchase(tenders=TENDERS, line_items=ITEMS[:2]), program)
    first = [entry for entry in outcome.ledger if entry.rule == "r0"]
    factor = (D(100) - max(ZERO, D(70) - D(limit))) / D(100)
    assert sum(entry.amount for entry in first) == round(D(10) * factor, 3) * 2  # (the default rounding: 3 places)
    assert all((entry.desired_amount is not None) == cut for entry in first)
    assert [note for note in outcome.skipped if "source caps" in note] == []  # points left: not a skip
    assert all(entry.desired_amount is None for entry in outcome.ledger if entry.rule == "r1")
