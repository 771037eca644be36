"""The engine's fast paths give exactly what the plain computations give: action plans taken once per program,
the plan's units, the per-set constants of compiled rule sets, the shared fixed-offset activity time, and
local dates and period labels kept per activity."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import AwareDatetime, TypeAdapter

from loyalty_stream.engine import allocation, expiry, periods, times
from loyalty_stream.engine.earn import action_plan
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.facts import facts
from loyalty_stream.engine.line_items import Unit, units_for
from loyalty_stream.engine.state import ZERO, new_state
from loyalty_stream.events.activities import TransactionPayload
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.program.model import Program
from loyalty_stream.program.rules import AllocateAction, Period, Rule, rule_plan
from tests.unit.conftest import activity, program_from

D = Decimal

ACTIONS: list[dict[str, Any]] = [
    {"type": "allocate", "condition": "PCT"},
    {"type": "allocate", "condition": "PCT", "line_items": {"use_proportions": True}},
    {"type": "allocate", "condition": "FIX", "line_items": {"use_proportions": False, "max_points": "7"}},
    {"type": "allocate", "condition": "PCT", "line_items": {"sku_in": ["A", "C"]}},
    {"type": "allocate", "condition": "FIX", "line_items": {"category_in": ["fuel"]}},
    {"type": "allocate", "condition": "BILL", "line_items": {"sku_in": ["A"], "category_in": ["fuel", "food"]}},
    {"type": "allocate", "condition": "PCT", "tender_modes": ["CARD"]},
]


def make_program() -> Program:
    return program_from({
        "earn_conditions": [
            {"code": "PCT", "allocation": {"type": "prorated", "percent": 5}, "delay_days": 3},
            {"code": "FIX", "allocation": {"type": "fixed", "points": 2}, "expiry": "E", "delay_days": 3},
            {"code": "BILL", "allocation": {"type": "fixed", "points": 1}, "delay_days": 3,
             "based_on": {"kind": "transaction_field", "field": "channel", "equals": "online"}},
        ],
        "expiry_conditions": [{"code": "E", "based_on": "event_date", "unit": "days", "value": 10}],
        "rule_sets": {"TransactionAdd": [
            {"name": "plain", "rules": [{"name": "r0", "actions": ACTIONS[:4]}]},
            {"name": "capped", "caps": {"total_points": 100, "total_points_period": "day", "source_value": 500,
                                        "tracker": {"field": "litres", "limit": 10}},
             "rules": [{"name": "r1", "when": "transaction.amount > 1", "actions": ACTIONS[4:]}]},
        ]},
    })


def payloads() -> list[TransactionPayload | None]:
    items = [
        {"item_id": "1", "sku": "A", "amount": "10.50", "category": "fuel"},
        {"item_id": "2", "sku": "B", "amount": "3", "category": None},
        {"item_id": "3", "sku": "C", "amount": "0", "category": "food"},
    ]
    return [
        None,
        TransactionPayload(bill_number="b", amount=D("13.5")),
        TransactionPayload(bill_number="b", amount=D("13.5"), line_items=items),
        TransactionPayload(bill_number="b", amount=D("3"), line_items=items[1:2]),
    ]


def all_actions(program: Program) -> list[tuple[Rule, int, AllocateAction]]:
    found = []
    for sets in program.rule_sets.values():
        for rule_set in sets:
            for rule in rule_set.rules:
                for index, action in enumerate(rule.actions):
                    assert isinstance(action, AllocateAction)
                    found.append((rule, index, action))
    return found


def test_plans_hold_what_the_action_rule_and_condition_say() -> None:
    program = make_program()
    for rule, index, action in all_actions(program):
        plan = action_plan(program, action, rule, index)
        condition = program.earn_condition(action.condition)
        options = action.line_items
        assert plan.info == allocation.earn_info(program, action.condition)
        assert plan.condition is condition and plan.code == condition.code
        assert plan.always_applies == (condition.based_on.kind == "tier")
        assert plan.options is options
        assert plan.filtered == (options is not None and options.filtered)
        assert plan.proportional == (options is None or options.use_proportions)
        assert plan.max_points == (None if options is None else options.max_points)
        assert plan.tender_modes == action.tender_modes
        assert plan.delay_days == condition.delay_days and plan.expiry == condition.expiry
        assert plan.key_head == (rule.name, str(index), condition.code)
        assert action_plan(program, action, rule, index) is plan  # taken from the program's table


def test_an_action_outside_the_program_or_at_another_place_gets_its_own_plan() -> None:
    program = make_program()
    rule, index, action = all_actions(program)[2]
    known = action_plan(program, action, rule, index)
    elsewhere = action_plan(program, action, rule, index + 1)  # the same action at another position
    assert elsewhere is not known and elsewhere.key_head == (rule.name, str(index + 1), "FIX")
    other_rule = rule.model_copy(update={"name": "other"})
    assert action_plan(program, action, other_rule, index).key_head[0] == "other"
    fresh = AllocateAction(condition="PCT")
    plan = action_plan(program, fresh, rule, 0)
    assert plan.action is fresh and plan.delay_days == 3 and plan.expiry is None
    assert action_plan(program, fresh, rule, 0) is not plan  # not kept: hand-built actions do not pile up


def _straightforward_units(action: AllocateAction, payload: Any) -> list[Unit]:
    """The units of an action, read from the action itself: the oracle of the plan's fast path."""
    if payload is None:
        return [Unit(None, ZERO)]
    options = action.line_items
    if options is None or not payload.line_items:
        return [] if options is not None and options.filtered else [Unit(None, payload.amount)]
    return [Unit(i.item_id, i.amount, i) for i in payload.line_items
            if (options.sku_in is None or i.sku in options.sku_in)
            and (options.category_in is None or i.category in options.category_in)]


@pytest.mark.parametrize("payload_index", range(4))
def test_plan_units_are_the_units_of_the_action(payload_index: int) -> None:
    program = make_program()
    payload = payloads()[payload_index]
    for rule, index, action in all_actions(program):
        plan = action_plan(program, action, rule, index)
        expected = _straightforward_units(action, payload)
        got = units_for(plan.options, plan.filtered, payload)
        assert [(u.item_id, u.amount, u.item) for u in got] == [(u.item_id, u.amount, u.item) for u in expected]
        assert [str(u.amount) for u in got] == [str(u.amount) for u in expected]  # the exponent too


def test_compiled_sets_carry_their_name_and_caps() -> None:
    program = make_program()
    for compiled in rule_plan(program).by_activity["TransactionAdd"]:
        caps = compiled.rule_set.caps
        assert compiled.name == compiled.rule_set.name
        assert compiled.caps is caps
        assert compiled.total_points == caps.total_points
        assert compiled.source_value == caps.source_value
        assert compiled.amount_capped == (caps.tender_amount is not None or caps.tracker is not None)
    plain, capped = rule_plan(program).by_activity["TransactionAdd"]
    assert not plain.amount_capped and plain.total_points is None
    assert capped.amount_capped and capped.total_points == D(100) and capped.source_value == D(500)


# Activity times: one shared fixed-offset zone, local dates and period labels kept per activity -------------

def reference_fixed(at: datetime) -> datetime:
    """`times.fixed` as first written: the offset's shared zone (registered by then), by `replace`."""
    offset = at.utcoffset()
    assert offset is not None
    zone = times._BY_OFFSET[offset]
    return at if at.tzinfo is zone else at.replace(tzinfo=zone)


class SubDatetime(datetime):
    pass


KOLKATA = ZoneInfo("Asia/Kolkata")
NEW_YORK = ZoneInfo("America/New_York")
TIMES = [
    datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
    datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2024, 5, 1, 10, 0, tzinfo=KOLKATA),
    datetime(2024, 11, 3, 1, 30, tzinfo=NEW_YORK, fold=1),  # the repeated hour: fold kept
    datetime(2024, 11, 3, 1, 30, tzinfo=NEW_YORK, fold=0),
    datetime(2024, 2, 29, 23, 59, 59, tzinfo=timezone(timedelta(hours=-3, minutes=-17))),
    SubDatetime(2024, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))),  # a subclass stays one
    TypeAdapter(AwareDatetime).validate_python("2024-05-01T10:00:00+05:30"),  # pydantic's own zone class
    TypeAdapter(AwareDatetime).validate_python("2024-05-01T10:00:00Z"),
]


@pytest.mark.parametrize("at", TIMES)
def test_fixed_gives_what_replace_gives(at: datetime) -> None:
    got = times.fixed(at)
    expected = reference_fixed(at)
    assert type(got) is type(expected) and got.tzinfo is expected.tzinfo
    assert (got.isoformat(), got.fold, got.utcoffset()) == (expected.isoformat(), expected.fold, expected.utcoffset())
    assert got.astimezone(UTC) == at.astimezone(UTC) and times.fixed(got) is got  # the same instant; kept as is


def test_fixed_recognises_only_the_shared_zones() -> None:
    own = timezone(timedelta(hours=5, minutes=30))  # an equal zone, but not the shared object
    at = datetime(2024, 5, 1, 10, 0, tzinfo=own)
    got = times.fixed(at)
    assert got is not at and got.tzinfo is times.fixed(datetime(2024, 1, 1, tzinfo=KOLKATA)).tzinfo


@pytest.mark.parametrize("local", [date(2024, 1, 1), date(2024, 2, 29), date(2024, 12, 31), date(2025, 6, 15)])
@pytest.mark.parametrize("period", ["day", "calendar_week", "calendar_month", "calendar_year", "lifetime"])
def test_period_label_of_a_local_date_is_the_period_key(local: date, period: Period) -> None:
    for hour in (0, 13, 23):
        at = datetime.combine(local, time(hour, 59), tzinfo=KOLKATA).astimezone(UTC)
        assert periods.period_label(local, period) == periods.period_key(at, period, KOLKATA)


def test_effects_keep_the_activity_times_and_follow_the_activity_they_act_for() -> None:
    program = program_from({"timezone": "America/New_York"})
    activity = act_of("2024-03-10T04:30:00Z")  # 23:30 local on 9 March
    fx = Effects(new_state("c1", "default"), activity, program, None)
    assert fx.event_id == activity.event_id and fx.event_time is activity.event_time and fx.at is fx.event_time
    assert fx.time == activity.event_time and fx.time.tzinfo is times.fixed(fx.time).tzinfo
    assert fx.local_date() == activity.event_time.astimezone(NEW_YORK).date() == date(2024, 3, 9)
    other = act_of("2024-03-10T12:00:00+01:00", "e2")
    before = fx.act_for(other)
    assert (fx.activity, fx.event_id, fx.event_time) == (other, "e2", other.event_time)
    assert fx.local_date() == date(2024, 3, 10)  # the memo follows the activity
    fx.restore(before)
    assert (fx.activity, fx.event_id, fx.event_time) == (activity, activity.event_id, activity.event_time)
    assert fx.local_date() == date(2024, 3, 9)


def act_of(when: str, event_id: str = "e1") -> Envelope:
    return activity("CustomerUpdate", event_id, when)


# Event-date expiries kept per program, code, tier and local date ------------------------------------------

EXPIRY_PROGRAM: dict[str, Any] = {
    "timezone": "Asia/Kolkata",
    "default_expiry": "DAYS",
    "tiers": [{"name": "bronze", "threshold": 0}, {"name": "silver", "threshold": 100}],
    "expiry_conditions": [
        {"code": "DAYS", "based_on": "event_date", "unit": "days", "value": 10},
        {"code": "MONTHS", "based_on": "rolling_event_date", "unit": "months", "value": {"bronze": 1, "silver": 3}},
        {"code": "SILVER_ONLY", "based_on": "event_date", "unit": "days", "value": {"silver": 5}},
        {"code": "GONE", "based_on": "event_date", "unit": "date", "date": "2024-03-01"},  # clamped to the event
        {"code": "SOON", "based_on": "event_date", "unit": "date", "date": "2024-03-05"},  # clamped from 6 March
        {"code": "NEVER", "based_on": "event_date", "unit": "never"},
        {"code": "MEMBER", "based_on": "membership_end", "unit": "days", "value": 1},
    ],
}


def test_event_date_expiries_kept_per_day_are_what_compute_expiry_gives() -> None:
    program = program_from(EXPIRY_PROGRAM)
    whens = ["2024-03-04T18:00:00Z", "2024-03-04T18:29:59Z", "2024-03-04T18:30:00Z", "2024-03-05T01:00:00+05:30",
             "2024-03-05T23:00:00+05:30", "2024-03-06T00:00:00+05:30", "2024-03-06T12:00:00Z"]
    for round_, tier in enumerate(["bronze", "silver", "bronze", "silver"]):  # later rounds read what was kept
        for i, when in enumerate(whens):
            state = new_state("c1", "default")
            state.tier = tier
            state.membership_end = date(2024, 3, 20)
            fx = Effects(state, act_of(when, f"e{round_}-{i}"), program, None)
            for code in ("DAYS", "MONTHS", "SILVER_ONLY", "GONE", "SOON", "NEVER", "MEMBER", None):
                condition = expiry_condition_of(program, code)
                expected = expiry.compute_expiry(condition, earned=fx.event_time, now=fx.event_time, tier=tier,
                                                 zone=program.zone, state=state)
                got, got_code, rolling = expiry.assign_expiry(fx, code)
                assert (got_code, rolling) == (code or program.default_expiry, code == "MONTHS")
                assert got == expected and (got is None or got.utcoffset() == expected.utcoffset()), (code, when)
    table = facts(program).event_ends
    assert {code for code, _, _ in table} == {"DAYS", "MONTHS", "SILVER_ONLY", "SOON", "NEVER"}  # never clamped
    assert all(end is None or end.tzinfo is times.fixed(end).tzinfo for end, _ in table.values())


def expiry_condition_of(program: Program, code: str | None) -> Any:
    return program.expiry_condition(code or "DAYS")
