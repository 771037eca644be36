"""The lifecycle's lookup fast paths answer exactly what the plain computations give: `IdentityMemo`'s direct-mapped
front (never another object's value, even for objects sharing a slot; every kept entry still found),
`available_after_activity` (its last answer and its table, against `available_after` of the activity's time) and
`_remind`'s group scan (identity before comparison; checked against the reference in
test_engine_fastpath_lifecycle's materialise test, and here on expiries that are equal but other objects)."""

from __future__ import annotations

import gc
import random
import weakref
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_stream.engine import lifecycle, times
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.state import Lot, new_state
from loyalty_stream.engine.times import IdentityMemo, fixed
from loyalty_stream.events import activities as act

from .test_next_transition_fast import program_for


class _Key:
    """A plain object (weak-referenceable, hashed by identity)."""


def _lot(lot_id: str, expires_at: datetime | None, remaining: str, earned_at: datetime) -> Lot:
    return Lot(lot_id=lot_id, points=Decimal(remaining), remaining=Decimal(remaining), promised=False,
               earned_at=earned_at, available_at=None, expires_at=expires_at, source_event_id=lot_id)


def _slot(key: object) -> int:
    return (id(key) >> 4) & times._FRONT_MASK


# IdentityMemo ---------------------------------------------------------------------------------------------
def test_identity_memo_gives_each_object_its_own_value_across_shared_slots() -> None:
    """Random puts and gets over objects, many sharing front slots: a get answers the value last put for that
    very object (or None once the bounded dict dropped it), never another's; unbounded, it always answers."""
    rng = random.Random(37)
    keys = [_Key() for _ in range(6000)]  # (kept alive: ids are not reused)
    by_slot: dict[int, list[_Key]] = {}
    for key in keys:
        by_slot.setdefault(_slot(key), []).append(key)
    assert max(len(group) for group in by_slot.values()) > 2  # slots are shared
    for limit in (10 ** 9, 64):
        memo: IdentityMemo[str] = IdentityMemo(limit)
        model: dict[int, str] = {}
        for step in range(40000):
            if rng.random() < 0.5:
                group = by_slot[rng.choice(list(by_slot))]  # (often a key of a crowded slot)
                key = rng.choice(group)
            else:
                key = rng.choice(keys)
            if rng.random() < 0.4:
                value = f"v{step}"
                assert memo.put(key, value) is value
                model[id(key)] = value
            else:
                got = memo.get(key)
                if limit > 10 ** 6:
                    assert got == model.get(id(key))
                else:
                    assert got is None or got == model[id(key)]
            if step % 997 == 0:  # the front holds entries of the dict only (bounded with it)
                for slot_key, value in zip(memo._keys, memo._slots, strict=True):
                    if slot_key is not times._EMPTY:
                        kept = memo._values[id(slot_key)]
                        assert kept[0] is slot_key and kept[1] is value


def test_identity_memo_tells_equal_objects_apart_and_holds_its_keys() -> None:
    """Equal date-times of other offsets are other keys; a kept key stays alive (its id cannot be reused)."""
    memo: IdentityMemo[str] = IdentityMemo()
    utc = datetime(2026, 3, 1, tzinfo=UTC)
    east = utc.astimezone(timezone(timedelta(hours=5)))
    assert utc == east
    memo.put(utc, utc.isoformat())
    assert memo.get(east) is None
    memo.put(east, east.isoformat())
    assert (memo.get(utc), memo.get(east)) == (utc.isoformat(), east.isoformat())
    key = _Key()
    ref = weakref.ref(key)
    memo.put(key, "kept")
    del key
    gc.collect()
    assert ref() is not None and memo.get(ref()) == "kept"


def test_identity_memo_misses_on_an_empty_front() -> None:
    """A fresh memo answers None for anything, the empty-slot marker included."""
    memo: IdentityMemo[str] = IdentityMemo()
    for key in (None, times._EMPTY, _Key(), datetime(2026, 1, 1, tzinfo=UTC), "text", 12345):
        assert memo.get(key) is None


# available_after_activity ----------------------------------------------------------------------------------
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Apia")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ZONES), st.integers(0, 3 * 365 * 24 * 4), st.integers(0, 40),
                          st.integers(-14 * 4, 14 * 4), st.integers(1, 4)), min_size=1, max_size=12))
def test_available_after_activity_is_available_after_the_activity_time(
        cases: list[tuple[str, int, int, int, int]]) -> None:
    """Activities of several zones (DST changes, odd offsets), times given in other offsets, delays asked in
    any order and repeated, and again while acting as a synthetic activity: always `available_after` itself."""
    for zone_name, quarter_hours, delay, offset_quarters, repeats in cases:
        program = program_for(zone_name, (), None, None)
        zone = ZoneInfo(zone_name)
        at = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=15 * quarter_hours)
        given_at = at.astimezone(timezone(timedelta(minutes=15 * offset_quarters)))
        activity = act.PointsExpiry(event_id="e", program_id=program.id, customer_id="c",
                                    event_time=given_at, payload=act.PointsExpiryPayload(due_at=given_at))
        fx = Effects(new_state("c", program.id), activity, program, None)
        for n in range(repeats):
            for days in (delay, delay + n, delay):
                got = lifecycle.available_after_activity(fx, days)
                assert got == lifecycle.available_after(at, days, zone)
                assert got.utcoffset() == lifecycle.available_after(at, days, zone).utcoffset()
        later = given_at + timedelta(hours=13)
        synthetic = lifecycle.due_activity(program.id, "c", later, "PointsExpiry", "s")
        with lifecycle.acting_as(fx, synthetic):
            got = lifecycle.available_after_activity(fx, delay)
            assert got == lifecycle.available_after(later, delay, zone)
        assert lifecycle.available_after_activity(fx, delay) == lifecycle.available_after(at, delay, zone)


def test_available_after_activity_survives_its_table_filling() -> None:
    """Past the table's bound (cleared, refilled), answers stay right."""
    program = program_for("Europe/Berlin", (), None, None)
    zone = ZoneInfo("Europe/Berlin")
    start = datetime(2020, 1, 1, 11, tzinfo=UTC)
    for day in range(0, 2 * lifecycle._AVAILABLE_LIMIT + 10, 1):
        at = start + timedelta(days=day // 3, hours=day % 3)
        activity = act.PointsExpiry(event_id="e", program_id=program.id, customer_id="c", event_time=at,
                                    payload=act.PointsExpiryPayload(due_at=at))
        fx = Effects(new_state("c", program.id), activity, program, None)
        assert lifecycle.available_after_activity(fx, day % 5) == lifecycle.available_after(at, day % 5, zone)
    assert len(lifecycle._AVAILABLE) <= lifecycle._AVAILABLE_LIMIT


# _remind ----------------------------------------------------------------------------------------------------
def test_remind_groups_equal_expiries_held_by_other_objects() -> None:
    """Lots whose expiries are the same instant as other objects (and other offsets) join the group; other
    instants, expired or empty lots, lots already reminded and lots without expiry do not."""
    program = program_for("Europe/Berlin", (3,), None, None)
    expires = fixed(datetime(2026, 5, 1, 0, tzinfo=ZoneInfo("Europe/Berlin")))
    same_other_object = fixed(datetime(2026, 4, 30, 22, tzinfo=UTC))
    same_other_offset = datetime(2026, 4, 30, 20, tzinfo=timezone(timedelta(hours=-2)))
    earned = datetime(2026, 3, 1, tzinfo=UTC)
    due = lifecycle.reminder_due(expires, 3, ZoneInfo("Europe/Berlin"))
    state = new_state("c", program.id)
    lots = [
        _lot("a", expires, "5", earned),
        _lot("b", same_other_object, "7.5", earned),
        _lot("c", same_other_offset, "1", earned),
        _lot("d", expires + timedelta(days=1), "100", earned),
        _lot("e", None, "100", earned),
        _lot("f", expires, "0", earned),
        _lot("g", expires, "1000", due + timedelta(hours=1)),  # earned after the reminder was due
        _lot("h", expires, "10000", earned),
    ]
    lots[-1].reminded = (3,)
    state.lots = lots
    activity = act.PointsExpiry(event_id="e", program_id=program.id, customer_id="c", event_time=due,
                                payload=act.PointsExpiryPayload(due_at=due))
    fx = Effects(state, activity, program, None)
    lifecycle._remind(fx, lifecycle._program_dues(program), due, lifecycle.stamp(expires), 3, lots[0])
    (notification,) = fx.finish().notifications
    assert notification.data["points"] == "13.5"
    assert [lot.reminded for lot in lots] == [(3,), (3,), (3,), (), (), (), (), (3,)]
