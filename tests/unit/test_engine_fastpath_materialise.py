"""What `lifecycle`'s cheaper materialisation and scans rely on, against the plain references:

- date-time objects shared by lots (a purchase's lots, a due time from the reminder table) are settled by
  identity in `next_transition`, `_collect` and `_batch_ends`, while equal objects that are not the same (another
  offset, another copy) still compare as instants;
- the first batch's conversions skip the "still promised and holding points" test (`_collect` just saw it), a
  later batch's do not: a promised lot emptied by an earlier expiry is not converted;
- the accrual context's bill numbers: every one once, sorted, when the lots share one bill object, equal copies
  or several bills;
- a reminder's expiry group: lots expiring at the same instant in any offset (hashes prefilter the others).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from loyalty_stream.engine import lifecycle
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.expiry import local_midnight
from loyalty_stream.engine.lifecycle import CONVERT, EXPIRE, REMIND
from loyalty_stream.engine.state import ZERO, CustomerState, Lot
from loyalty_stream.engine.times import fixed

from .conftest import activity
from .test_delayed_accrual import program as accrual_program
from .test_engine_fastpath_lifecycle import reference_materialise, shown_outcome
from .test_next_transition_fast import _lot, assert_same, program_for

INDIA = timezone(timedelta(hours=5, minutes=30))


def _copy(at: datetime) -> datetime:
    """An equal date-time object that is not `at` (what decoding a second lot gives)."""
    return at + timedelta(0) if at + timedelta(0) is not at else at.replace()


def _effects(state: CustomerState, program: Any, when: str = "2024-12-01T12:00:00+00:00") -> Effects:
    return Effects(state, activity("Registration", "trigger", when), program, None)


def _same_materialise(make: Any, program: Any, until: datetime | None = None) -> list[Any]:
    """`materialise` of a fresh state from `make()` up to `until` (the activity's own time when None: the
    identity fast path), and the reference's; returns the fast outcome after checking they are equal."""
    fast, plain = _effects(make(), program), _effects(make(), program)
    lifecycle.materialise(fast, fast.time if until is None else until)
    reference_materialise(plain, plain.time if until is None else until)
    shown = shown_outcome(fast)
    assert shown == shown_outcome(plain)
    return shown


# next_transition / _collect on shared objects -------------------------------------------------------------
def test_ties_on_a_shared_object_order_by_kind_then_lot_id() -> None:
    program = program_for("Europe/London", (7, 1), None, None)
    zone = program.zone
    instant = local_midnight(date(2024, 6, 10), zone)
    other = _copy(instant)
    for lots in (
        # An expiry, then a conversion at the very same object: the conversion is the earliest (its kind).
        [_lot("a", instant), _lot("b", None, promised=True, available_at=instant)],
        [_lot("b", None, promised=True, available_at=instant), _lot("a", instant)],
        # A purchase's conversions (one object) in descending lot ids, an equal copy in between.
        [_lot(i, None, promised=True, available_at=at) for i, at in (("c", instant), ("b", other), ("a", instant))],
        # Expiries sharing the object and an equal one in another offset.
        [_lot("z", instant), _lot("y", instant.astimezone(INDIA)), _lot("x", instant)],
        # Lots sharing an expiry: the second meets the first's reminder (the same due object) as the earliest.
        [_lot("m", instant), _lot("n", instant), _lot("o", other, reminded=(7,))],
        # Conversions are scanned first: an older lot's expiry (another offset) at their instant, then theirs.
        [_lot("a", instant.astimezone(INDIA)), _lot("b", instant, promised=True, available_at=other),
         _lot("c", None, promised=True, available_at=instant)],
        [_lot("a", instant - timedelta(days=1)), _lot("p", instant, promised=True, available_at=instant)],
        # Conversions at one instant in two offsets: the lower lot id's object, wherever it is in the lots.
        [_lot("b", None, promised=True, available_at=instant.astimezone(INDIA)),
         _lot("a", None, promised=True, available_at=instant), _lot("c", None, promised=True, available_at=other)],
        [_lot("a", None, promised=True, available_at=instant.astimezone(INDIA)),
         _lot("b", None, promised=True, available_at=instant)],
    ):
        state = CustomerState("c1", "default", lots=lots)
        for until in (None, instant - timedelta(days=7), instant, other + timedelta(days=1)):
            assert_same(state, program, until)
    plain = program_for("Europe/London", (), None, None)  # (no reminders before the expiry)
    state = CustomerState("c1", "default", lots=[_lot("a", instant),
                                                 _lot("b", None, promised=True, available_at=instant)])
    assert lifecycle.next_transition(state, plain) == lifecycle.Due(instant, "DelayedAccrual")
    state.lots.reverse()
    assert lifecycle.next_transition(state, plain) == lifecycle.Due(instant, "DelayedAccrual")
    # A promised lot holding nothing has neither a conversion nor an expiry (the second pass tests it too).
    state = CustomerState("c1", "default", lots=[_lot("z", instant, promised=True),
                                                 _lot("y", instant + timedelta(days=1))])
    state.lots[0].remaining = ZERO
    assert lifecycle.next_transition(state, plain) == lifecycle.Due(instant + timedelta(days=1), "PointsExpiry")
    assert_same(state, plain, instant + timedelta(days=2))


def test_collect_skips_by_identity_only_what_a_comparison_would() -> None:
    """A conversion due at `until` (shared), one just after it (an equal-looking other object), expiries shared
    and not: the transitions and batches equal the reference's."""
    program = program_for("UTC", (3,), None, None)
    until = datetime(2024, 3, 10, tzinfo=UTC)
    later = until + timedelta(microseconds=1)
    lots = [_lot("p1", until + timedelta(days=90), promised=True, available_at=until),
            _lot("p2", until + timedelta(days=90), promised=True, available_at=later),
            _lot("p3", until + timedelta(days=90), promised=True, available_at=until),
            _lot("e1", until), _lot("e2", later), _lot("e3", until), _lot("e4", _copy(until))]
    lots[2].remaining = ZERO
    state = CustomerState("c1", "default", lots=lots)
    assert_same(state, program, until)
    # Conversions only, at one object: sorted by lot id alone, a repeated id in the lots' order.
    one = [_lot(i, until + timedelta(days=90), promised=True, available_at=until) for i in ("d", "b", "c", "b", "a")]
    assert_same(CustomerState("c1", "default", lots=one), program, until)
    assert [id(t.lot) for t in lifecycle.transitions(CustomerState("c1", "default", lots=one), program, until)] == [
        id(one[4]), id(one[1]), id(one[3]), id(one[2]), id(one[0])]
    # Conversions only, at two instants: by time first (not by lot id alone).
    two = [_lot("a", None, promised=True, available_at=until), _lot("b", None, promised=True,
                                                                    available_at=until - timedelta(days=1))]
    assert [t.key for t in lifecycle.transitions(CustomerState("c1", "default", lots=two), program, until)] == [
        "b", "a"]
    assert [(t.order, t.key) for t in lifecycle.transitions(state, program, until) if t.order != REMIND] == [
        (CONVERT, "p1"), (EXPIRE, "e1"), (EXPIRE, "e3"), (EXPIRE, "e4")]


# materialise ------------------------------------------------------------------------------------------------
def test_a_lot_emptied_by_an_earlier_expiry_is_not_converted() -> None:
    """The first batch's conversions skip the test, a later batch's must not: lot x expires (promised) before
    its conversion falls due; lot y converts in the first batch, at the instant lot z expires."""
    program = program_for("UTC", (), None, None)
    first = datetime(2024, 5, 1, tzinfo=UTC)
    second = first + timedelta(days=3)

    def make() -> CustomerState:
        return CustomerState("c1", "default", lots=[
            _lot("x", first, promised=True, available_at=second),
            _lot("y", first + timedelta(days=30), promised=True, available_at=first),
            _lot("z", _copy(first)), _lot("w", None, promised=True, available_at=second)])

    ledger = [json.loads(entry) for entry in _same_materialise(make, program)[0]]
    assert [(entry["kind"], entry["lot_id"]) for entry in ledger] == [
        ("convert", "y"), ("expire", "x"), ("expire", "z"), ("convert", "w"), ("expire", "y")]
    state = make()
    fx = _effects(state, program)
    lifecycle.materialise(fx, fx.time)
    assert state.lots[0].promised and state.lots[0].remaining == ZERO  # (expired while promised)


def test_materialise_up_to_the_activity_time_or_an_equal_time() -> None:
    """`until` the activity's own time object (already fixed) or an equal one in another offset: the same."""
    program = program_for("Asia/Kolkata", (1,), None, None)
    when = datetime(2024, 12, 1, 12, tzinfo=UTC)

    def make() -> CustomerState:
        due = fixed(when.astimezone(INDIA))
        return CustomerState("c1", "default", lots=[
            _lot("a", due, promised=True, available_at=due), _lot("b", due + timedelta(days=1)),
            _lot("c", None, promised=True, available_at=due)])

    assert _same_materialise(make, program) == _same_materialise(make, program, when.astimezone(INDIA))


def _bill_lots(bills: list[str | None]) -> list[Lot]:
    lots = []
    for n, bill in enumerate(bills):
        lot = _lot(f"l{n}", None, promised=True, available_at=datetime(2024, 5, 1, tzinfo=UTC))
        lot.bill_number = bill
        lots.append(lot)
    return lots


@pytest.fixture()
def contexts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[lifecycle.Conversion]]:
    """The contexts the DelayedAccrual rule sets see (their `convert` action's)."""
    seen: list[lifecycle.Conversion] = []

    def capture(fx: Effects, action: Any, rule: Any, context: Any, index: int) -> None:
        seen.append(context)

    monkeypatch.setitem(lifecycle.ACCRUAL_HANDLERS, "convert", capture)
    yield seen


def test_the_accrual_context_has_every_bill_number_once_sorted(contexts: list[lifecycle.Conversion]) -> None:
    program = accrual_program(1, accrual_rules=[{"name": "on-convert", "rules": [
        {"name": "all", "when": "true", "actions": [{"type": "convert"}]}]}])
    b1 = "".join(["B", "1"])
    copies = ["".join(["B", "1"]) for _ in range(2)]
    assert copies[0] is not copies[1] and copies[0] is not b1
    cases: list[list[str | None]] = [
        [None], [b1], [b1, b1, b1], [b1, *copies], [None, b1, None, b1], ["B2", b1, "B2", copies[0]],
        [b1, "B0", copies[1], "B3", "B0"], [None, None, "B2", b1],
    ]
    at = datetime(2024, 5, 1, tzinfo=UTC)
    for bills in cases:
        lots = _bill_lots(bills)
        converted = [(lot, Decimal(n + 1) / 4) for n, lot in enumerate(lots)]
        fx = _effects(CustomerState("c1", "default", lots=lots), program)
        lifecycle._accrual_rules(fx, at, converted)
        context = contexts.pop()
        assert context.bill_numbers == tuple(sorted({b for b in bills if b is not None})), bills
        assert context.lot_ids == tuple(lot.lot_id for lot in lots)
        assert str(context.points) == str(sum((amount for _, amount in converted), ZERO))
    assert not contexts


def test_a_reminder_groups_the_lots_expiring_at_its_instant_in_any_offset() -> None:
    program = program_for("UTC", (7,), None, None)
    instant = datetime(2024, 12, 5, tzinfo=UTC)

    def make() -> CustomerState:
        return CustomerState("c1", "default", lots=[
            _lot("a", instant), _lot("b", instant.astimezone(INDIA)), _lot("c", instant + timedelta(seconds=1)),
            _lot("d", _copy(instant)), _lot("e", instant - timedelta(days=1)), _lot("f", None),
            _lot("g", fixed(instant.astimezone(timezone(timedelta(hours=-4)))))])

    notifications = [json.loads(note) for note in _same_materialise(make, program)[1]]
    # e's group (a day earlier), then a's (a, b, d and g: one instant in four offsets), then c's.
    assert [note["data"]["points"] for note in notifications] == ["5", "20", "5"]

    def interleaved() -> CustomerState:  # another instant's shared object between the group's lots
        later = instant + timedelta(days=2)
        return CustomerState("c1", "default", lots=[
            _lot("x", later), _lot("a", instant), _lot("d", instant), _lot("y", later), _lot("b", _copy(instant)),
            _lot("z", later), _lot("c", instant)])

    notifications = [json.loads(note) for note in _same_materialise(interleaved, program)[1]]
    assert [note["data"]["points"] for note in notifications] == ["20", "15"]
