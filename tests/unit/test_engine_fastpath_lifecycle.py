"""`lifecycle`'s fast paths give exactly what the plain code gave: `materialise` (batches cut inline from plain
tuples, the accrual context summed in one pass, the reminder's texts remembered, shared synthetic payloads),
`next_transition` and `_collect` (a lot settled by one comparison, or skipped by the identity of its expiry
object), the per-program cache, and `Due` (written out, no longer a frozen dataclass).

The references are the code they replaced, kept verbatim (`test_next_transition_fast` holds the references of
the transition scans)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from bench import workload
from bench.engine_bench import decode_records
from loyalty_stream.engine import lifecycle, rules
from loyalty_stream.engine.contracts import trusted
from loyalty_stream.engine.core import apply, clone_state
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.expiry import expiry_date, local_midnight
from loyalty_stream.engine.ids import derive_id
from loyalty_stream.engine.lifecycle import CONVERT, EXPIRE, REMIND, Due, Transition
from loyalty_stream.engine.state import ZERO, CustomerState, Lot
from loyalty_stream.events import activities as act
from loyalty_stream.events.codec import encode
from loyalty_stream.events.envelope import SCHEMA_VERSION, Envelope
from loyalty_stream.stream.processor import encode_state

from .test_next_transition_fast import (
    _lot,
    assert_same,
    program_for,
    reference_batches,
    reference_transitions,
    shown_transitions,
)


# The references: the code the fast versions replaced ------------------------------------------------------
def reference_synthetic(state: CustomerState, at: datetime, kind: lifecycle.DueKind, event_id: str) -> Envelope:
    payload_cls = act.DelayedAccrualPayload if kind == "DelayedAccrual" else act.PointsExpiryPayload
    activity_cls = act.DelayedAccrual if kind == "DelayedAccrual" else act.PointsExpiry
    payload = trusted(payload_cls, {"due_at": at})
    return trusted(activity_cls, {"event_id": event_id, "program_id": state.program_id,
                                  "customer_id": state.customer_id, "event_time": at,
                                  "schema_version": SCHEMA_VERSION, "type": kind, "payload": payload})


def reference_accrual_rules(fx: Effects, at: datetime, converted: list[tuple[Lot, Decimal]]) -> None:
    if not converted or not fx.known.accrual_rules:
        return
    state = fx.state
    synthetic = reference_synthetic(state, at, "DelayedAccrual",
                                    derive_id("da", state.program_id, state.customer_id, lifecycle.stamp(at)))
    assert isinstance(synthetic, act.DelayedAccrual)
    context = lifecycle.Conversion(
        activity=synthetic, due_at=at, points=sum((amount for _, amount in converted), ZERO),
        lot_ids=tuple(lot.lot_id for lot, _ in converted),
        bill_numbers=tuple(sorted({lot.bill_number for lot, _ in converted if lot.bill_number is not None})),
    )
    with lifecycle.acting_as(fx, synthetic):
        rules.run_rule_sets(fx, "DelayedAccrual", context, lifecycle.ACCRUAL_HANDLERS)


def reference_remind(fx: Effects, transition: Transition) -> None:
    state, program = fx.state, fx.program
    expires_at = transition.lot.expires_at
    assert expires_at is not None
    n, due = transition.days_before, transition.at
    group = [
        lot for lot in state.lots
        if lot.expires_at == expires_at and lot.remaining > ZERO and lifecycle._reminder_applies(lot, n, due)
    ]
    if not group:
        return
    for lot in group:
        lot.reminded = (*lot.reminded, n)
    points = sum((lot.remaining for lot in group), ZERO)
    synthetic = reference_synthetic(state, due, "PointsExpiry",
                                    derive_id("rm", state.program_id, state.customer_id, transition.key, str(n)))
    with lifecycle.acting_as(fx, synthetic):
        fx.notify(program.reminders.channel, program.reminders.template, ("reminder", transition.key, str(n)),
                  {"points": f"{points:f}", "expires_on": expiry_date(expires_at, program.zone).isoformat(),
                   "days_before": str(n)})


def reference_materialise(fx: Effects, until: datetime) -> Counter[int]:
    """The plain `materialise`; returns how many transitions of each order it applied."""
    applied: Counter[int] = Counter()
    for batch in reference_batches(fx.state, fx.program, until):
        converted = [
            (t.lot, lifecycle.convert(fx, t.lot, t.at, scheduled=True))
            for t in batch if t.order == CONVERT and t.lot.promised and t.lot.remaining > ZERO
        ]
        applied[CONVERT] += len(converted)
        if converted:
            reference_accrual_rules(fx, batch[0].at, converted)
        for t in batch:
            if t.order == REMIND:
                reference_remind(fx, t)
                applied[REMIND] += 1
            elif t.order == EXPIRE and t.lot.remaining > ZERO:
                lifecycle.expire(fx, t.lot, t.at)
                applied[EXPIRE] += 1
    return applied


def shown_outcome(fx: Effects) -> list[Any]:
    """Every output of the materialisation, as bytes, and the state it left."""
    outcome = fx.finish()
    return [[encode(entry) for entry in outcome.ledger], [encode(n) for n in outcome.notifications],
            [encode(c) for c in outcome.coupons], [encode(t) for t in outcome.tier_changes],
            None if outcome.balance_change is None else encode(outcome.balance_change), encode_state(outcome.state)]


# materialise ---------------------------------------------------------------------------------------------
def test_materialise_gives_the_reference_outputs_over_the_bench_workload() -> None:
    """Before activities of the benchmark workload (the one whose program has reminders and DelayedAccrual rule
    sets), up to their time and later: the same ledger, notifications, balance change and state."""
    registry = workload.load_registry()
    program = registry.get(workload.PROGRAM_ID)
    assert program is not None
    states: dict[str, CustomerState] = {}
    applied: Counter[int] = Counter()
    compared = 0
    for index, (item, source) in enumerate(decode_records(workload.generate(4000, 800, seed=5, days=120))):
        state = states.get(item.customer_id)
        if state is not None and index % 3 == 0:
            fast, plain = Effects(clone_state(state), item, program, source), Effects(clone_state(state), item,
                                                                                       program, source)
            until = fast.time + timedelta(days=index % 40)
            lifecycle.materialise(fast, until)
            applied += reference_materialise(plain, until)
            assert shown_outcome(fast) == shown_outcome(plain)
            compared += 1
        states[item.customer_id] = apply(state, item, program, source, in_place=True).state
    assert compared > 1000 and min(applied[CONVERT], applied[REMIND], applied[EXPIRE]) > 100, applied


# next_transition and _collect ------------------------------------------------------------------------------
def test_lots_sharing_date_time_objects() -> None:
    """Lots sharing their expiry object (as the engine's and the decoder's do): one settled or skipped lot
    decides for the next ones, while conversions between them lower the earliest so far."""
    program = program_for("Europe/London", (7, 1), None, None)
    zone = program.zone
    early, late = local_midnight(date(2024, 6, 10), zone), local_midnight(date(2024, 9, 1), zone)
    soon, converts = local_midnight(date(2024, 5, 2), zone), local_midnight(date(2024, 5, 20), zone)
    lots = [
        _lot("p1", late, promised=True, available_at=converts),
        _lot("a", late), _lot("b", late),
        _lot("p2", late, promised=True, available_at=soon),
        _lot("c", late), _lot("d", early), _lot("e", early, reminded=(7,)), _lot("f", late),
    ]
    lots[2].remaining = ZERO
    state = CustomerState("c1", "default", lots=lots)
    for until in (None, soon, early - timedelta(days=7), early, late, late + timedelta(days=1)):
        assert_same(state, program, until)
    lots[3].available_at = early  # the conversion ties the expiry's earliest reminder: no longer earliest
    lots[5].reminded = (7, 1)
    for until in (None, early, late):
        assert_same(state, program, until)
    assert lifecycle.next_transition(state, program) == Due(converts, "DelayedAccrual")
    lots[0].promised = False  # then lot e's reminder a day before `early` (d's were sent)
    assert lifecycle.next_transition(state, program) == Due(early - timedelta(days=1), "PointsExpiry")
    assert_same(state, program, late)


def test_a_reminder_due_at_the_earliest_so_far_is_not_settled() -> None:
    """Only a reminder due strictly after the earliest so far settles its lot: at a tie with an expiry the
    reminder comes first, and then a later expiry at that instant (another offset) does not take its place."""
    program = program_for("Europe/London", (7,), None, None)
    zone = program.zone
    instant = local_midnight(date(2024, 6, 10), zone)
    state = CustomerState("c1", "default", lots=[
        _lot("m", instant, reminded=(7,)), _lot("y", local_midnight(date(2024, 6, 17), zone)),
        _lot("a", instant.astimezone(UTC), reminded=(7,))])
    due = lifecycle.next_transition(state, program)
    assert due is not None and due.at.isoformat() == instant.isoformat() and due.kind == "PointsExpiry"
    assert_same(state, program, instant)


def test_a_negative_horizon_turns_the_prefilter_off() -> None:
    """Reminders after the expiry (a negative offset) give a horizon below zero: a lot expiring just before
    `until` is still due."""
    program = program_for("UTC", (-3,), None, None)
    expiry = datetime(2024, 3, 1, tzinfo=UTC)
    state = CustomerState("c1", "default", lots=[_lot("a", expiry), _lot("b", expiry + timedelta(days=2))])
    until = expiry + timedelta(days=1)
    assert [t.key for t in lifecycle.transitions(state, program, until)] == ["a"]
    assert shown_transitions(lifecycle.transitions(state, program, until)) == shown_transitions(
        reference_transitions(state, program, until))
    assert_same(state, program, until)


def test_programs_are_told_apart() -> None:
    """The per-program cache goes by identity: two programs in turn, and a copy with other reminders."""
    one, two = program_for("UTC", (7,), None, None), program_for("Asia/Kolkata", (1, 3), None, None)
    three = one.model_copy(update={"reminders": one.reminders.model_copy(update={"days_before": [2]})})
    expiry = datetime(2024, 3, 1, tzinfo=UTC)
    state = CustomerState("c1", "default", lots=[_lot("a", expiry)])
    for program in (one, two, one, three, two, three):
        assert_same(state, program, expiry - timedelta(days=2))
    dues = lifecycle.next_transition(state, one), lifecycle.next_transition(state, three)
    assert dues[0] is not None and dues[1] is not None and dues[0].at < dues[1].at


def test_due_is_a_value() -> None:
    at = datetime(2024, 3, 1, tzinfo=UTC)
    due = Due(at, "PointsExpiry")
    assert due == Due(at.astimezone(timezone(timedelta(hours=2))), "PointsExpiry")
    assert due != Due(at, "DelayedAccrual") and due != Due(at + timedelta(seconds=1), "PointsExpiry")
    assert hash(due) == hash(Due(at, "PointsExpiry")) and len({due, Due(at, "PointsExpiry")}) == 1
    assert (due.at, due.kind) == (at, "PointsExpiry")


# Synthetic activities ------------------------------------------------------------------------------------
def test_synthetic_activities_equal_the_reference_and_share_payloads() -> None:
    state = CustomerState("c1", "prog")
    at = datetime(2024, 3, 1, tzinfo=UTC)
    same_instant = at.astimezone(timezone(timedelta(hours=5, minutes=30)))
    for kind in ("DelayedAccrual", "PointsExpiry"):
        for when in (at, same_instant, at):
            fast, plain = lifecycle._synthetic(state, when, kind, "e1"), reference_synthetic(state, when, kind, "e1")
            assert type(fast) is type(plain) and encode(fast) == encode(plain)
            assert fast.model_dump() == plain.model_dump() == lifecycle.due_activity(
                "prog", "c1", when, kind, "e1").model_dump()
        assert lifecycle._payload(at, kind) is lifecycle._payload(at, kind)
        other = lifecycle._payload(same_instant, kind)
        assert isinstance(other, act.DelayedAccrualPayload | act.PointsExpiryPayload)
        assert other is not lifecycle._payload(at, kind) and other.due_at.isoformat() == same_instant.isoformat()
