"""`lifecycle.next_transition` (one pass over the lots) and `lifecycle.transitions` (sorted without a UTC
conversion per transition when every due time has a fixed offset) give exactly what the straightforward
versions gave: `min` / `sorted` by `Transition.sort_key` over every pending transition. The references below
are the code they replaced, kept verbatim, and the results are compared down to the due time's offset.

Date-times carry fixed offsets (`datetime.timezone`, as the engine computes and decodes them) or a zone
without DST: the engine compares lots' date-times directly everywhere (`_pending`'s `until`, `may_be_due`),
which in a zone's DST fold compares wall times, not instants."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from functools import cache
from itertools import groupby
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import workload
from bench.engine_bench import decode_records
from loyalty_stream.engine import lifecycle, parking
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.expiry import local_midnight, reminder_due
from loyalty_stream.engine.facts import facts
from loyalty_stream.engine.lifecycle import CONVERT, EXPIRE, REMIND, Due, DueKind, Transition
from loyalty_stream.engine.state import ZERO, CustomerState, Lot, Parked
from loyalty_stream.engine.times import fixed
from loyalty_stream.program.model import Program

from .conftest import activity, program_from


# The references: the code the fast versions replaced --------------------------------------------------
def _reminder_applies(lot: Lot, days_before: int, due: datetime) -> bool:
    assert lot.expires_at is not None
    return days_before not in lot.reminded and lot.earned_at < due < lot.expires_at


def reference_pending(state: CustomerState, program: Program, until: datetime | None) -> Iterator[Transition]:
    known = facts(program)
    zone = known.zone
    offsets = known.reminder_offsets
    if until is not None:
        until = fixed(until)
    reminders_until = None if until is None or not offsets else until + known.reminder_horizon
    group_dues: dict[datetime, list[tuple[int, datetime]]] = {}
    reminded: set[tuple[datetime, int]] = set()
    for lot in state.lots:
        if lot.remaining <= ZERO:
            continue
        if lot.promised and lot.available_at is not None and (until is None or lot.available_at <= until):
            yield Transition(lot.available_at, CONVERT, lot.lot_id, lot)
        expires_at = lot.expires_at
        if expires_at is None:
            continue
        if until is None or expires_at <= until:
            yield Transition(expires_at, EXPIRE, lot.lot_id, lot)
        if not offsets or (reminders_until is not None and expires_at > reminders_until):
            continue
        group = expires_at
        dues = group_dues.get(group)
        if dues is None:
            dues = group_dues[group] = [(n, reminder_due(expires_at, n, zone)) for n in offsets]
        for n, due in dues:
            if (until is not None and due > until) or (group, n) in reminded:
                continue
            if _reminder_applies(lot, n, due):
                reminded.add((group, n))
                yield Transition(due, REMIND, lifecycle.stamp(expires_at), lot, n)


def reference_next_transition(state: CustomerState, program: Program) -> Due | None:
    first = min(reference_pending(state, program, None), key=Transition.sort_key, default=None)
    give_up = parking.next_give_up(state, program) if state.parked else None
    if give_up is not None and (first is None or give_up < first.at):
        return Due(give_up, "PointsExpiry")
    if first is None:
        return None
    kind: DueKind = "DelayedAccrual" if first.order == CONVERT else "PointsExpiry"
    return Due(first.at, kind)


def reference_transitions(state: CustomerState, program: Program, until: datetime | None) -> list[Transition]:
    return sorted(reference_pending(state, program, until), key=Transition.sort_key)


def reference_batches(state: CustomerState, program: Program, until: datetime) -> list[list[Transition]]:
    pending = reference_transitions(state, program, until)
    return [list(group) for _, group in groupby(pending, key=lambda t: t.at.astimezone(UTC))]


def shown_due(due: Due | None) -> tuple[Any, ...] | None:
    """Everything a caller can see of a due: the instant, its offset and time zone, the kind."""
    return None if due is None else (due.kind, due.at, due.at.isoformat(), due.at.tzinfo)


def shown_transitions(pending: list[Transition]) -> list[tuple[Any, ...]]:
    return [(t.at.isoformat(), t.at.tzinfo, t.order, t.key, t.days_before, id(t.lot)) for t in pending]


def assert_same_transitions(state: CustomerState, program: Program, until: datetime | None) -> None:
    """`transitions`, and the batches `materialise` applies."""
    assert shown_transitions(lifecycle.transitions(state, program, until)) == shown_transitions(
        reference_transitions(state, program, until))
    if until is not None:
        assert [shown_transitions(batch) for batch in lifecycle._batches(state, program, until)] == [
            shown_transitions(batch) for batch in reference_batches(state, program, until)]


def assert_same(state: CustomerState, program: Program, until: datetime | None = None) -> None:
    assert shown_due(lifecycle.next_transition(state, program)) == shown_due(
        reference_next_transition(state, program))
    assert lifecycle.next_due(state, program) == (
        None if (due := reference_next_transition(state, program)) is None else due.at)
    assert_same_transitions(state, program, until)


# Random states ---------------------------------------------------------------------------------------
ZONES = ["Europe/London", "America/New_York", "Asia/Kolkata", "UTC"]
REMINDERS: list[tuple[int, ...]] = [(), (7,), (3, 1), (1, 3, 3), (0, 2), (-1, 2), (1, 7, 14)]
BASES = [datetime(2024, 10, 20, 10, tzinfo=UTC),  # London and New York fall back a week later
         datetime(2024, 3, 25, 22, 30, tzinfo=UTC)]  # both spring forward within days
OFFSETS = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-4)),
           timezone(timedelta(hours=1)), timezone(timedelta(hours=1)),  # equal, not the same object
           ZoneInfo("Asia/Kolkata"), "program"]
LOT_IDS = ["a", "b", "b", "c"]  # a repeated id: ties on the whole sort key keep the first
DAY = 24 * 60


@cache
def program_for(zone: str, days_before: tuple[int, ...], returns: int | None, reversals: int | None) -> Program:
    retention: dict[str, Any] = {}
    if returns is not None:
        retention["return_window_days"] = returns
    if reversals is not None:
        retention["reversal_window_days"] = reversals
    return program_from({"timezone": zone, "reminders": {"days_before": list(days_before)},
                         "retention": retention})


@st.composite
def instants(draw: st.DrawFn, base: datetime, zone: ZoneInfo) -> datetime:
    """Few distinct instants (ties are the point), often local midnights (expiries, and reminders some days
    before them), in any of several offsets."""
    if draw(st.booleans()):
        day = base.astimezone(zone).date() + timedelta(days=draw(st.integers(-1, 8)))
        at = local_midnight(day, zone)
    else:
        at = base + timedelta(minutes=draw(st.sampled_from([-DAY, 0, 90, DAY // 2, 3 * DAY, 7 * DAY + 30, 21 * DAY])))
    tz = draw(st.sampled_from(OFFSETS))
    return fixed(at.astimezone(zone)) if tz == "program" else at.astimezone(tz)  # type: ignore[arg-type]


@st.composite
def cases(draw: st.DrawFn) -> tuple[CustomerState, Program, datetime | None]:
    zone_name = draw(st.sampled_from(ZONES))
    program = program_for(zone_name, draw(st.sampled_from(REMINDERS)),
                          draw(st.sampled_from([None, 1, 30])), draw(st.sampled_from([None, 2])))
    zone = program.zone
    base = draw(st.sampled_from(BASES))
    at = instants(base, zone)
    lots = []
    for index in range(draw(st.integers(0, 8))):
        promised = draw(st.booleans())
        lots.append(Lot(
            lot_id=draw(st.sampled_from(LOT_IDS)), points=Decimal(5),
            remaining=draw(st.sampled_from([Decimal(5), Decimal(5), Decimal(1), ZERO, Decimal(-1)])),
            promised=promised, earned_at=draw(at),
            available_at=draw(st.one_of(st.none(), at)) if promised or draw(st.booleans()) else None,
            expires_at=draw(st.one_of(st.none(), at, at)),
            source_event_id=f"e{index}",
            reminded=tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 7, 14]), max_size=3))),
        ))
    parked = []
    for index in range(draw(st.integers(0, 2))):
        when = draw(at).isoformat()
        if draw(st.booleans()):
            parked.append(Parked(activity("PointsUnlock", f"p{index}", when, bill_number="B1"), None))
        else:
            parked.append(Parked(activity("RedemptionReversal", f"p{index}", when, redemption_id="R1"), None))
    state = CustomerState(customer_id="c1", program_id="default", lots=lots, parked=parked)
    return state, program, draw(st.one_of(st.none(), at))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_same_as_the_reference_on_random_states(case: tuple[CustomerState, Program, datetime | None]) -> None:
    state, program, until = case
    assert_same(state, program, until)


LONDON = ZoneInfo("Europe/London")
WALL_TIMES = [(date(2024, 10, 27), time(0, 30)), (date(2024, 10, 27), time(1, 0)), (date(2024, 10, 27), time(1, 30)),
              (date(2024, 10, 27), time(2, 0)), (date(2024, 3, 31), time(1, 30)), (date(2024, 3, 31), time(2, 30)),
              (date(2024, 3, 31), time(0, 30))]
"""London's fall-back fold (01:00-02:00 twice) and spring-forward gap (01:00-02:00 never)."""


@st.composite
def wall_times(draw: st.DrawFn) -> datetime:
    """Date-times in a zone with DST, in or next to its fold and gap (either fold), or the same instants in UTC."""
    day, wall = draw(st.sampled_from(WALL_TIMES))
    at = datetime.combine(day, wall, tzinfo=LONDON).replace(fold=draw(st.integers(0, 1)))
    return at.astimezone(UTC) if draw(st.integers(0, 3)) == 0 else at


@settings(max_examples=500, deadline=None)
@given(zone=st.sampled_from(ZONES), days_before=st.sampled_from(REMINDERS),
       lots=st.lists(st.tuples(st.sampled_from(LOT_IDS), st.booleans(), wall_times(), wall_times(), wall_times()),
                     max_size=6),
       until=st.one_of(st.none(), wall_times()))
def test_transitions_in_a_zone_with_folds(zone: str, days_before: tuple[int, ...],
                                          lots: list[tuple[str, bool, datetime, datetime, datetime]],
                                          until: datetime | None) -> None:
    """Where wall times of one zone do not order as instants, `transitions` and its batches still go by UTC."""
    program = program_for(zone, days_before, None, None)
    state = CustomerState("c1", "default", lots=[
        _lot(lot_id, expires_at, promised=promised, available_at=available_at,
             earned_at=datetime(2024, 1, 1, tzinfo=UTC) if earned_at.month == 3 else earned_at)
        for lot_id, promised, available_at, expires_at, earned_at in lots])
    assert_same_transitions(state, program, until)


def _lot(lot_id: str, expires_at: datetime | None, *, promised: bool = False, available_at: datetime | None = None,
         earned_at: datetime = datetime(2024, 1, 1, tzinfo=UTC), reminded: tuple[int, ...] = ()) -> Lot:
    return Lot(lot_id=lot_id, points=Decimal(5), remaining=Decimal(5), promised=promised, earned_at=earned_at,
               available_at=available_at, expires_at=expires_at, source_event_id=lot_id, reminded=reminded)


def test_ties_at_one_instant_keep_the_first_by_sort_key() -> None:
    program = program_for("UTC", (), None, None)
    instant = datetime(2024, 2, 1, tzinfo=UTC)
    india, new_york = instant.astimezone(OFFSETS[1]), instant.astimezone(OFFSETS[2])  # type: ignore[arg-type]
    # Expiries at one instant: the lower lot id's time, whatever the order of the lots.
    state = CustomerState("c1", "default", lots=[_lot("b", india), _lot("a", new_york)])
    due = lifecycle.next_transition(state, program)
    assert due is not None and due.at.isoformat() == new_york.isoformat() and due.kind == "PointsExpiry"
    assert_same(state, program)
    # A conversion at that instant comes first, and makes it a DelayedAccrual.
    state.lots.append(_lot("z", None, promised=True, available_at=india))
    assert shown_due(lifecycle.next_transition(state, program)) == ("DelayedAccrual", india, india.isoformat(),
                                                                    india.tzinfo)
    assert_same(state, program)
    # The same lot id twice (whole sort keys equal): the first lot's time.
    for promised in (True, False):
        lots = [_lot("a", None if promised else at, promised=promised, available_at=at if promised else None)
                for at in (india, new_york)]
        state = CustomerState("c1", "default", lots=lots)
        due = lifecycle.next_transition(state, program)
        assert due is not None and due.at.isoformat() == india.isoformat()
        assert_same(state, program)


def test_a_reminder_before_an_expiry_at_the_same_instant() -> None:
    program = program_for("Europe/London", (3,), None, None)
    zone = program.zone
    expiry = local_midnight(date(2024, 11, 1), zone)
    reminder = reminder_due(expiry, 3, zone)
    india = reminder.astimezone(OFFSETS[1])  # type: ignore[arg-type]
    state = CustomerState("c1", "default", lots=[_lot("b", india, reminded=(3,)), _lot("a", expiry)])
    assert shown_due(lifecycle.next_transition(state, program)) == ("PointsExpiry", reminder, reminder.isoformat(),
                                                                    reminder.tzinfo)
    assert_same(state, program)
    state.lots[1].reminded = (3,)  # already sent: the other lot's expiry at that instant is next
    assert shown_due(lifecycle.next_transition(state, program)) == ("PointsExpiry", india, india.isoformat(),
                                                                    india.tzinfo)
    assert_same(state, program)


def test_a_give_up_at_the_earliest_instant_leaves_the_transition() -> None:
    program = program_for("UTC", (), 1, None)
    parked_at = datetime(2024, 2, 1, tzinfo=UTC)
    give_up = parked_at + timedelta(days=1)
    park = Parked(activity("PointsUnlock", "p", parked_at.isoformat(), bill_number="B1"), None)
    state = CustomerState("c1", "default", lots=[_lot("a", give_up)], parked=[park])
    assert_same(state, program)
    state.lots[0].expires_at = give_up + timedelta(seconds=1)
    assert lifecycle.next_transition(state, program) == Due(give_up, "PointsExpiry")
    assert_same(state, program)


def test_same_as_the_reference_over_the_bench_workload() -> None:
    """After every activity of the benchmark workload, for the customer it changed."""
    registry = workload.load_registry()
    program = registry.get(workload.PROGRAM_ID)
    assert program is not None
    states: dict[str, CustomerState] = {}
    kinds: Counter[str | None] = Counter()
    for index, (item, source) in enumerate(decode_records(workload.generate(20000, 10000, seed=7))):
        state = apply(states.get(item.customer_id), item, program, source, in_place=True).state
        states[item.customer_id] = state
        due = lifecycle.next_transition(state, program)
        assert shown_due(due) == shown_due(reference_next_transition(state, program))
        kinds[None if due is None else due.kind] += 1
        if index % 10 == 0:
            until = item.event_time + timedelta(days=index % 60)
            assert shown_transitions(lifecycle.transitions(state, program, until)) == shown_transitions(
                reference_transitions(state, program, until))
    assert kinds.total() == 20000 and min(kinds["DelayedAccrual"], kinds["PointsExpiry"]) > 1000
