"""A rule set's facts read once per program (`facts.SetFacts`, the runner's key head) give what the plain reads
of the compiled set and its caps give, and a scope closing over one lot writes the amount counter's share as
`distribute` would have (one lot takes the whole count)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from random import Random
from typing import Any

import pytest

from loyalty_stream.engine.caps import AmountCap, SetScope
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.facts import SetFacts, facts
from loyalty_stream.engine.line_items import distribute, quantum_of
from loyalty_stream.engine.rounding import normalize
from loyalty_stream.engine.state import Lot, new_state
from loyalty_stream.program.model import Program
from loyalty_stream.program.rules import rule_plan
from tests.unit.conftest import activity, program_from

D = Decimal

CAPS: list[dict[str, Any]] = [
    {},
    {"total_points": 50, "total_points_period": "day"},
    {"source_value": 70},
    {"tender_amount": {"modes": ["CASH", "CARD"], "limit": 80, "period": "calendar_month"}},
    {"tracker": {"field": "litres", "limit": 50, "period": "calendar_year"}, "total_points": "12.5"},
    {"tender_amount": {"modes": ["CARD"], "limit": 30}, "tracker": {"field": "litres", "limit": 5}},
]
ITEMS = [{"item_id": "1", "sku": "A", "amount": "60", "custom_fields": {"litres": 30}},
         {"item_id": "2", "sku": "B", "amount": "40"}]
TENDERS = [{"mode": "CARD", "amount": "70"}, {"mode": "CASH", "amount": "30"}]


def sets_program(caps: dict[str, Any]) -> Program:
    return program_from({
        "earn_conditions": [{"code": "PCT", "allocation": {"type": "prorated", "percent": 10}}],
        "rule_sets": {"TransactionAdd": [
            {"name": "first", "caps": caps, "rules": [{"name": "r0", "actions": [
                {"type": "allocate", "condition": "PCT", "line_items": {"use_proportions": True}}]}]},
            {"name": "second", "rules": [{"name": "r1", "actions": [{"type": "allocate", "condition": "PCT"}]}]},
        ]},
    })


def purchase(event_id: str = "e1") -> Any:
    return activity("TransactionAdd", event_id, "2024-05-01T10:00:00+05:30", bill_number=f"b-{event_id}",
                    amount="100", line_items=ITEMS, tenders=TENDERS)


@pytest.mark.parametrize("caps", CAPS)
def test_set_facts_are_the_compiled_sets_own(caps: dict[str, Any]) -> None:
    program = sets_program(caps)
    runs = facts(program).set_runs("TransactionAdd")
    assert [run.compiled for run in runs] == list(rule_plan(program).by_activity["TransactionAdd"])
    for run in runs:
        compiled, info = run.compiled, run.facts
        cap = compiled.caps
        assert info.compiled is compiled and run.key_head == ("TransactionAdd", compiled.rule_set.name)
        assert (info.name, info.activity, info.total_points, info.points_period, info.source_value) == (
            compiled.rule_set.name, "TransactionAdd", cap.total_points, cap.total_points_period, cap.source_value)
        assert info.amount_capped == (cap.tender_amount is not None or cap.tracker is not None)
        tender, tracker = cap.tender_amount, cap.tracker
        assert info.has_tender == (tender is not None) and info.has_tracker == (tracker is not None)
        if tender is not None:
            assert info.tender_what == "tender:" + "+".join(sorted(tender.modes))
            assert (info.tender_modes, info.tender_mode_set) == (tender.modes, frozenset(tender.modes))
            assert (info.tender_limit, info.tender_period) == (tender.limit, tender.period)
        if tracker is not None:
            assert (info.tracker_what, info.tracker_field) == (f"tracker:{tracker.field}", tracker.field)
            assert (info.tracker_limit, info.tracker_period) == (tracker.limit, tracker.period)


def _view(scope: SetScope, fx: Effects) -> tuple[Any, ...]:
    caps = [(c.key, str(c.counted), c.factors, c.modes, str(c.excess), c.notes) for c in scope.amount_caps(fx)]
    return scope.key_head, scope.points_key(fx), scope.points_room(fx), caps


@pytest.mark.parametrize("caps", CAPS)
@pytest.mark.parametrize("used", [None, "3", "49.99"])
def test_a_scope_with_the_runs_facts_is_the_plain_scope(caps: dict[str, Any], used: str | None) -> None:
    program = sets_program(caps)
    deal = purchase()
    for run in facts(program).set_runs("TransactionAdd"):
        for prefix, head in [(("TransactionAdd",), run.key_head), (("TierChange", "gold"), None)]:
            views = []
            for info, key_head in [(None, None), (run.facts, head)]:
                fx = Effects(new_state("c1", "default"), deal, program, None)
                if used is not None:  # every counter of the set already used this much
                    plain = SetScope(run.compiled, deal, prefix)
                    for key in [plain.points_key(fx), *(c.key for c in plain.amount_caps(fx))]:
                        if key is not None:
                            fx.state.counters[key] = D(used)
                scope = SetScope(run.compiled, deal, prefix, info=info, key_head=key_head)
                views.append(_view(scope, fx))
            assert views[0] == views[1]
            assert views[0][0] == (*prefix, run.compiled.rule_set.name)


def test_facts_of_another_set_are_not_used() -> None:
    program = sets_program(CAPS[1])
    first, second = facts(program).set_runs("TransactionAdd")
    scope = SetScope(second.compiled, purchase(), ("TransactionAdd",), info=first.facts)
    assert scope.info.compiled is second.compiled and scope.info.name == "second"
    assert isinstance(scope.info, SetFacts) and scope.key_head == ("TransactionAdd", "second")


def _random_counted(rng: Random) -> Decimal:
    digits = rng.randint(1, 20)  # (at most 26 digits before the point: `normalize` quantizes)
    coefficient = rng.randrange(1, 10 ** digits)
    return D(coefficient).scaleb(rng.randint(-12, 6))


def _lot(points: Decimal, number: int) -> Lot:
    at = datetime(2024, 5, 1, tzinfo=UTC)
    return Lot(f"l{number}", points, points, False, at, None, None, "e1")


@pytest.mark.parametrize("seed", range(40))
def test_closing_over_one_lot_writes_distributes_share(seed: int) -> None:
    rng = Random(seed)
    program = sets_program({"tender_amount": {"modes": ["CARD"], "limit": 80}})
    deal = purchase()
    counted = [D("12.5"), D("12.5000"), D("100"), D("1E+2"), D("0.00010"), D("7E-9")][seed % 6] if seed < 12 \
        else _random_counted(rng)
    lots_points = [D("0"), D(rng.randint(1, 500)).scaleb(-2)] if seed % 2 else [D(rng.randint(1, 500)).scaleb(-2)]
    fx = Effects(new_state("c1", "default"), deal, program, None)
    scope = SetScope(rule_plan(program).by_activity["TransactionAdd"][0], deal, ("TransactionAdd",))
    scope._tender = AmountCap("cap:k", counted, {None: D(1)})
    lots = [_lot(points, number) for number, points in enumerate(lots_points)]
    scope.lots = list(lots)
    scope.awarded = sum(lots_points, D(0))
    scope.close(fx)
    (share,) = distribute(counted, [lots_points[-1]], quantum_of(counted))
    assert lots[-1].cap_keys == (f"cap:k={normalize(share)}",)
    assert all(lot.cap_keys == () for lot in lots[:-1])
    assert fx.state.counters["cap:k"] == counted


def test_closing_over_several_lots_still_distributes() -> None:
    program = sets_program({"tender_amount": {"modes": ["CARD"], "limit": 80}})
    deal = purchase()
    fx = Effects(new_state("c1", "default"), deal, program, None)
    scope = SetScope(rule_plan(program).by_activity["TransactionAdd"][0], deal, ("TransactionAdd",))
    scope._tender = AmountCap("cap:k", D("10"), {None: D(1)})
    lots = [_lot(D("1"), 0), _lot(D("2"), 1)]
    scope.lots, scope.awarded = list(lots), D(3)
    scope.close(fx)
    shares = distribute(D("10"), [D(1), D(2)], quantum_of(D("10")))
    assert [lot.cap_keys for lot in lots] == [(f"cap:k={normalize(s)}",) for s in shares]


ROW_ITEMS = [{"item_id": "1", "sku": "A", "amount": "60.50", "category": "fuel", "custom_fields": {"litres": 30}},
             {"item_id": "2", "sku": "B", "amount": "40", "quantity": 2},
             {"item_id": "3", "sku": "C", "amount": "0.005", "category": "food"}]


@pytest.mark.parametrize("items", [[], ROW_ITEMS[:1], ROW_ITEMS])
@pytest.mark.parametrize("options", [None, {}, {"category_in": ["fuel"]}, {"sku_in": ["B", "C"]},
                                     {"sku_in": ["Z"], "category_in": ["fuel"]}, {"use_proportions": False}])
def test_units_from_the_activitys_item_rows_are_the_payloads(items: list[dict[str, Any]],
                                                             options: dict[str, Any] | None) -> None:
    from loyalty_stream.engine.line_items import item_rows, item_rows_of, units_for
    from loyalty_stream.program.rules import LineItemOptions

    deal = activity("TransactionAdd", "e1", "2024-05-01T10:00:00+05:30", bill_number="b", amount="100.5",
                    line_items=items)
    payload = deal.payload
    fx = Effects(new_state("c1", "default"), deal, sets_program({}), None)
    rows = item_rows_of(fx, payload)
    assert item_rows_of(fx, payload) is rows  # once per activity
    assert rows == [(i.item_id, i.amount, i, i.sku, i.category) for i in payload.line_items] == item_rows(payload)
    other = purchase("e2")  # another activity's payload is not answered from the memo
    assert item_rows_of(Effects(new_state("c1", "default"), other, sets_program({}), None),
                        other.payload)[0][2] is other.payload.line_items[0]
    opts = None if options is None else LineItemOptions.model_validate(options)
    filtered = opts is not None and opts.filtered
    want = units_for(opts, filtered, payload)
    got = units_for(opts, filtered, payload, rows)
    assert [(u.item_id, str(u.amount), u.item) for u in got] == [(u.item_id, str(u.amount), u.item) for u in want]
    plain = [] if opts is None or not payload.line_items else [
        i for i in payload.line_items if (opts.sku_in is None or i.sku in opts.sku_in)
        and (opts.category_in is None or i.category in opts.category_in)]
    if opts is None or not payload.line_items:
        assert [(u.item_id, u.amount) for u in got] == ([] if filtered else [(None, payload.amount)])
    else:
        assert [u.item for u in got] == plain


def test_the_bill_is_recorded_from_the_item_rows() -> None:
    from loyalty_stream.engine.core import apply

    deal = activity("TransactionAdd", "e1", "2024-05-01T10:00:00+05:30", bill_number="b", amount="100.5",
                    line_items=ROW_ITEMS)
    outcome = apply(None, deal, sets_program({}))
    bill = outcome.state.bills["b"]
    assert [(i.item_id, i.sku, str(i.amount), str(i.quantity)) for i in bill.items.values()] == [
        (i.item_id, i.sku, str(i.amount), str(i.quantity)) for i in deal.payload.line_items]
