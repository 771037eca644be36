"""Cap fast paths give exactly what the plain computation gives: counter keys kept per set and local date
(`caps._key_for`), the tracker cap's factors without the divisions that are exactly 1, and the counters' prune
in one pass over the keys."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from random import Random
from typing import Any

import pytest

from loyalty_stream.engine import caps, periods
from loyalty_stream.engine.caps import SetScope
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.facts import SetFacts, facts
from loyalty_stream.engine.line_items import ONE
from loyalty_stream.engine.state import ZERO, new_state
from loyalty_stream.program.expressions import field_value
from tests.unit.conftest import activity
from tests.unit.test_engine_fastpath_earn_sets import sets_program

D = Decimal
PERIODS: list[Any] = ["day", "calendar_week", "calendar_month", "calendar_year", "lifetime"]


def _deal(when: str, items: list[dict[str, Any]] | None = None, event_id: str = "e1") -> Any:
    return activity("TransactionAdd", event_id, when, bill_number=f"b-{event_id}", amount="100",
                    line_items=items or [], tenders=[{"mode": "CARD", "amount": "70"}])


@pytest.mark.parametrize("period", PERIODS)
def test_kept_counter_keys_are_the_built_ones(period: Any) -> None:
    program = sets_program({"tracker": {"field": "litres", "limit": 50, "period": period},
                            "total_points": 5, "total_points_period": period})
    run = facts(program).set_runs("TransactionAdd")[0]
    info = run.facts
    rng = Random(period)
    start = datetime(2023, 12, 20, 23, 30)
    for step in range(200):
        when = start + timedelta(hours=rng.randrange(0, 24 * 800))
        deal = _deal(when.isoformat() + rng.choice(["+05:30", "-09:00", "+00:00"]), event_id=f"e{step}")
        fx = Effects(new_state("c1", "default"), deal, program, None)
        day = fx.local_date()
        for keys, what in [(info.points_keys, "points"), (info.tracker_keys, info.tracker_what)]:
            want = caps.counter_key("TransactionAdd", "first", what, periods.period_label(day, period))
            assert caps._key_for(fx, keys, info, what, period) == want
            assert keys[day] == want  # kept, and answered from there the next time
            assert caps._key_for(fx, keys, info, what, period) == want
        scope = SetScope(run.compiled, deal, ("TransactionAdd",), info=info)
        assert scope.points_key(fx) == caps.counter_key("TransactionAdd", "first", "points",
                                                        caps.period_label(fx, period))
    # A scope built without the run's facts makes its own (and its own keys).
    alone = SetScope(run.compiled, deal, ("TransactionAdd",))
    assert alone.info is not info and isinstance(alone.info, SetFacts)
    assert alone.points_key(fx) == scope.points_key(fx)


def test_kept_keys_are_bounded() -> None:
    program = sets_program({"total_points": 5, "total_points_period": "day"})
    info = facts(program).set_runs("TransactionAdd")[0].facts
    for n in range(1100):
        deal = _deal((datetime(2020, 1, 1, 12) + timedelta(days=n)).isoformat() + "+00:00", event_id=f"e{n}")
        fx = Effects(new_state("c1", "default"), deal, program, None)
        key = caps._key_for(fx, info.points_keys, info, "points", "day")
        assert key.endswith(fx.local_date().isoformat())
        assert len(info.points_keys) <= 1024


# Tracker -----------------------------------------------------------------------------------------------------
def plain_tracker(fx: Effects, scope: SetScope, deal: Any, info: SetFacts) -> caps.AmountCap:
    """`caps._tracker` as it was: every factor and the bill's factor divided out."""
    key = caps._key_for(fx, info.tracker_keys, info, info.tracker_what, info.tracker_period)
    room = caps._room(fx, key, info.tracker_limit)
    factors: dict[str | None, Decimal] = {}
    notes: list[str] = []
    counted = weighted = items_total = ZERO
    tracked = info.tracker_field
    for item in deal.payload.line_items:
        item_id, amount = item.item_id, item.amount
        items_total += amount
        raw = item.custom_fields.get(tracked)
        if raw is None:
            factors[item_id] = ONE
            weighted += amount
            continue
        value = field_value(raw)
        if not isinstance(value, Decimal) or value < ZERO:
            factors[item_id] = ZERO
            notes.append(f"{scope.compiled.where}.caps.tracker: line item {item_id} field {tracked!r} "
                         f"is {raw!r}, not a quantity; the item earns nothing in this set")
            continue
        allowed = min(value, room - counted)
        counted += allowed
        factor = factors[item_id] = ONE if value == ZERO else allowed / value
        weighted += amount * factor
    if items_total > ZERO:
        factors[None] = weighted / items_total
    return caps.AmountCap(key, counted, factors, notes)


def _texts(cap: caps.AmountCap) -> tuple[Any, ...]:
    return cap.key, str(cap.counted), {k: str(v) for k, v in cap.factors.items()}, cap.notes


AMOUNTS = ["10", "10.5", "0.25", "3.000", "0", "99.99", "1E+1", "7"]
LITRES: list[Any] = [None, 0, 1, 2, 5, 13, 40, 60, -3, "x", 2.5, True]


@pytest.mark.parametrize("seed", range(40))
def test_tracker_factors_are_the_divided_ones(seed: int) -> None:
    rng = Random(seed)
    limit = rng.choice([5, 50, "12.5", 200])
    program = sets_program({"tracker": {"field": "litres", "limit": limit, "period": "calendar_month"}})
    run = facts(program).set_runs("TransactionAdd")[0]
    items = []
    for n in range(rng.randrange(0, 6)):
        litres = rng.choice(LITRES)
        items.append({"item_id": str(n), "sku": "S", "amount": rng.choice(AMOUNTS),
                      "custom_fields": {} if litres is None else {"litres": litres}})
    deal = _deal("2024-05-01T10:00:00+05:30", items)
    fx = Effects(new_state("c1", "default"), deal, program, None)
    scope = SetScope(run.compiled, deal, ("TransactionAdd",), info=run.facts)
    used = rng.choice([None, "0", "3", "4.75", "49.5", "60"])
    if used is not None:
        key = caps._key_for(fx, run.facts.tracker_keys, run.facts, run.facts.tracker_what, "calendar_month")
        fx.state.counters[key] = D(used)
    want = plain_tracker(fx, scope, deal, run.facts)
    got = caps._tracker(fx, scope, deal, run.facts)
    assert _texts(got) == _texts(want)


# Prune -------------------------------------------------------------------------------------------------------
def plain_prune(fx: Effects, key: str) -> None:
    """`caps._prune` as it was: the cap keys listed, then each one's end compared."""
    counters = fx.state.counters
    if not counters or key in counters or key.endswith(":lifetime"):
        return
    horizon = caps._horizon(fx, fx.time)
    for old in [k for k in counters if k.startswith("cap:")]:
        end = caps.period_end(old)
        if end is not None and end < horizon:
            del counters[old]


def _random_counters(rng: Random) -> dict[str, Decimal]:
    counters: dict[str, Decimal] = {}
    for _ in range(rng.randrange(0, 9)):
        period = rng.choice(PERIODS)
        start = date(2022, 1, 1) + timedelta(days=rng.randrange(0, 900))
        label = "lifetime" if period == "lifetime" else periods.period_label(start, period)
        head = rng.choice(["cap", "cap", "cap", "limit"])
        key = rng.choice([f"{head}:TransactionAdd:s{rng.randrange(3)}:points:{label}",
                          "cap:x:y:z:day:not-a-date", "cap:short", "other"])
        counters[key] = D(rng.randrange(1, 100))
    return counters


@pytest.mark.parametrize("seed", range(60))
def test_prune_drops_what_the_plain_prune_drops(seed: int) -> None:
    rng = Random(seed)
    if seed % 7 == 0:
        caps._ENDS.clear()  # keys not kept yet
    program = sets_program({})
    counters = _random_counters(rng)
    when = datetime(2023, 6, 1, 12) + timedelta(days=rng.randrange(0, 700))
    deal = _deal(when.isoformat() + "+00:00")
    opened = rng.choice([f"cap:TransactionAdd:s9:points:day:{when.date().isoformat()}",
                         "cap:TransactionAdd:s9:points:lifetime", *counters])
    results = []
    for prune in (plain_prune, caps._prune):
        fx = Effects(new_state("c1", "default"), deal, program, None)
        fx.state.counters = dict(counters)
        prune(fx, opened)
        results.append(list(fx.state.counters.items()))
    assert results[0] == results[1]


def test_prune_drops_old_counters_and_keeps_the_rest() -> None:
    program = sets_program({})
    deal = _deal("2024-05-01T10:00:00+00:00")
    fx = Effects(new_state("c1", "default"), deal, program, None)
    fx.state.counters = {"cap:A:s:points:day:2023-04-01": D(1), "cap:A:s:points:calendar_year:2023-01-01": D(2),
                         "limit:A:s:points:day:2020-01-01": D(3), "cap:A:s:points:lifetime": D(4),
                         "cap:A:s:points:day:2022-01-01": D(5)}
    caps._prune(fx, "cap:A:s:points:day:2024-05-01")
    assert list(fx.state.counters) == ["cap:A:s:points:day:2023-04-01", "cap:A:s:points:calendar_year:2023-01-01",
                                       "limit:A:s:points:day:2020-01-01", "cap:A:s:points:lifetime"]
