"""The earn path's per-program facts and shortcuts give exactly what the plain computations give: points from a
condition's facts (`allocation.points_for`) against `points_on`, the rule runner's `Facts.set_runs` against the
compiled plan, the cap age test for the activity's own period (`caps.current_too_old`) against `too_old`, and
`tender_amounts` / `distribute` against their plain definitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from loyalty_stream.engine import allocation, caps, periods
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.line_items import distribute, tender_amounts
from loyalty_stream.engine.state import ZERO, new_state
from loyalty_stream.events.activities import TransactionPayload
from loyalty_stream.program.model import Program
from loyalty_stream.program.rules import rule_plan
from tests.unit.conftest import activity, program_from

D = Decimal

CONDITIONS: list[dict[str, Any]] = [
    {"code": "PCT", "allocation": {"type": "prorated", "percent": "2.5"}},
    {"code": "PCT_TIER", "allocation": {"type": "prorated", "percent": {"bronze": 2, "gold": "7.25"}}},
    {"code": "FIX", "allocation": {"type": "fixed", "points": 15}},
    {"code": "FIX_ZERO", "allocation": {"type": "fixed", "points": 0}},
    {"code": "FIX_TIER", "allocation": {"type": "fixed", "points": {"silver": 100, "gold": "500.5"}}},
    {"code": "STEP", "allocation": {"type": "step", "points": 10, "step": 1000, "count": "full"}},
    {"code": "STEP_STARTED", "allocation": {"type": "step", "points": {"bronze": 5}, "step": "150",
                                            "count": "started"}},
    {"code": "MULTI", "allocation": {"type": "multiplier", "base": "PCT", "percent": 300}},
    {"code": "ROUND", "allocation": {"type": "round_up", "ranges": [
        {"from_points": 0, "to_points": 1000, "round_to": 10}]}},
    {"code": "FIELD", "allocation": {"type": "prorated", "percent": 4,
                                     "source": {"custom_field": "litres"}}},
]


def make_program() -> Program:
    return program_from({
        "tiers": [{"name": "bronze", "threshold": 0}, {"name": "silver", "threshold": 100},
                  {"name": "gold", "threshold": 1000}],
        "earn_conditions": CONDITIONS,
        "rule_sets": {
            "TransactionAdd": [
                {"name": "base", "rules": [{"name": "always", "actions": [
                    {"type": "allocate", "condition": "PCT"}, {"type": "notify", "channel": "push",
                                                               "template": "t"}]}]},
                {"name": "chain", "caps": {"total_points": 50, "total_points_period": "day"}, "rules": [
                    {"name": "big", "when": "transaction.amount >= 1000", "actions": [
                        {"type": "allocate", "condition": "STEP"}]},
                    {"name": "rest", "when": "true", "actions": [{"type": "allocate", "condition": "FIX"}]},
                ]},
            ],
            "Registration": [{"name": "welcome", "rules": [
                {"name": "w", "when": "1 == 1", "actions": [{"type": "allocate", "condition": "FIX_TIER"}]}]}],
        },
    })


def purchase(when: str = "2024-10-05T10:00:00Z", event_id: str = "e1", amount: str = "1200.50") -> Any:
    return activity("TransactionAdd", event_id, when, bill_number=f"B-{event_id}", amount=amount,
                    tenders=[{"mode": "CASH", "amount": "200.25"}, {"mode": "CARD", "amount": "1000.25"},
                             {"mode": "CASH", "amount": "0.00"}])


SOURCES = [D(0), D("-5"), D("0.01"), D("149.99"), D("150"), D("150.01"), D("999.999"), D("1000"), D("1200.50"),
           D("123456.789")]


@pytest.mark.parametrize("code", [c["code"] for c in CONDITIONS])
@pytest.mark.parametrize("tier", ["bronze", "silver", "gold"])
def test_points_for_is_points_on_digit_for_digit(code: str, tier: str) -> None:
    program = make_program()
    info = allocation.earn_info(program, code)
    fx = Effects(new_state("c1", "default"), purchase(), program, None)
    for source in SOURCES:
        got = allocation.points_for(program, info, tier, source, fx.state, fx.activity, fx.at)
        want = allocation.points_on(program, info.condition, tier, source, fx.state, fx.activity, fx.at)
        assert (str(got), type(got)) == (str(want), type(want)), (code, tier, source)


def test_condition_facts_are_read_out_of_the_allocation() -> None:
    program = make_program()
    assert allocation.earn_info(program, "PCT_TIER").values == {"bronze": D(2), "gold": D("7.25")}
    assert allocation.earn_info(program, "PCT").value == D("2.5")
    step = allocation.earn_info(program, "STEP_STARTED")
    assert (step.step, step.rounding) == (D(150), "ROUND_CEILING")


def test_set_runs_are_the_compiled_plan() -> None:
    program = make_program()
    fx = Effects(new_state("c1", "default"), purchase(), program, None)
    for name, plan in rule_plan(program).by_activity.items():
        runs = fx.known.set_runs(name)
        assert fx.known.set_runs(name) is runs  # built once
        assert [run.compiled for run in runs] == list(plan)
        for run, compiled_set in zip(runs, plan, strict=True):
            for rule_run, compiled in zip(run.rules, compiled_set.rules, strict=True):
                assert rule_run.rule is compiled.rule
                always = compiled.rule.when.strip() == "true"  # (a comparison is not folded: it is called)
                assert (rule_run.holds is None) == always
                if rule_run.holds is not None:
                    assert rule_run.holds is compiled.holds
                assert rule_run.actions == tuple((a.type, a) for a in compiled.rule.actions)
                assert all(a is b for (_, a), b in zip(rule_run.actions, compiled.rule.actions, strict=True))
    assert fx.known.set_runs("Engagement") == ()


@pytest.mark.parametrize("newest_days", [-30, 0, 1, 100, 396, 397, 398, 399, 400, 401, 402, 403, 430, 800])
@pytest.mark.parametrize("period", ["day", "calendar_week", "calendar_month", "calendar_year", "lifetime"])
def test_current_too_old_is_too_old_for_the_activitys_own_period(newest_days: int, period: Any) -> None:
    program = program_from({"timezone": "America/New_York"})  # (offsets and a DST change between the times)
    for hour in (0, 5, 18, 23):
        at = datetime(2024, 3, 31, hour, 30, tzinfo=UTC)
        fx = Effects(new_state("c1", "default"), purchase(at.isoformat()), program, None)
        for offset in (timedelta(0), timedelta(hours=7), timedelta(hours=-7)):
            fx.state.last_event_time = fx.time + timedelta(days=newest_days) + offset
            label = periods.period_label(fx.local_date(), period)
            key = caps.counter_key("TransactionAdd", "s", "points", label)
            assert caps.current_too_old(fx, key) == caps.too_old(key, fx.state.last_event_time, fx)
    fx.state.last_event_time = None
    assert caps.current_too_old(fx, key) is False


def test_period_end_is_kept_per_key() -> None:
    key = "cap:TransactionAdd:s:points:calendar_month:2024-02-01"
    assert caps.period_end(key) == caps.period_end(key) == datetime(2024, 3, 1).date()
    assert caps.period_end("cap:TransactionAdd:s:points:lifetime") is None
    assert caps.period_end("cap:x:y:z:day:not-a-date") is None


def test_tender_amounts_add_the_modes_in_bill_order() -> None:
    payload: TransactionPayload = purchase().payload
    for modes in (["CASH"], ["CARD"], ["CASH", "CARD"], [], ["OTHER"]):
        want = sum((t.amount for t in payload.tenders if t.mode in modes), ZERO)
        got = tender_amounts(payload, modes)
        assert (str(got), type(got)) == (str(want), type(want))


@pytest.mark.parametrize(("total", "weights", "quantum"), [
    ("10.00", ["1", "2", "3"], "0.01"), ("0.07", ["0.5", "0.25", "0.25"], "0.01"), ("-3", ["1", "1"], "1"),
    ("5", ["0", "0"], "1"), ("1.005", ["1", "2"], "0.001"), ("100", ["33.333", "66.667", "0"], "0.1"),
])
def test_distribute_gives_whole_quanta_that_add_up(total: str, weights: list[str], quantum: str) -> None:
    shares = distribute(D(total), [D(w) for w in weights], D(quantum))
    assert sum(shares, ZERO) == D(total)
    assert all((share / D(quantum)) == (share / D(quantum)).to_integral_value() for share in shares)


def test_distribute_refuses_a_total_that_is_not_whole_quanta() -> None:
    with pytest.raises(ValueError, match="not a multiple"):
        distribute(D("1.005"), [D(1), D(2)], D("0.01"))
