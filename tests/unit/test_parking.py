"""Parking: a return, unlock or reversal read before the purchase or redemption it refers to waits for it in the
customer's state and then runs exactly as in order; what cannot resolve is given up and dead-lettered."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from loyalty_stream.engine import parking
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Outcome
from loyalty_stream.engine.state import CustomerState, Parked, state_from_dict, state_to_dict, state_to_json
from loyalty_stream.events.activities import activity_adapter
from loyalty_stream.events.codec import encode
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.events.outputs import LedgerKind, SourceRef
from loyalty_stream.program.loader import ProgramRegistry
from loyalty_stream.program.model import Program
from loyalty_stream.stream.processor import TOPIC_OF_ACTIVITY, ActivityProcessor, decode_state

from .conftest import activity, program_from
from .test_processor import Store, outputs_of

D = Decimal
FIXED_NOW = datetime(2030, 1, 1, tzinfo=UTC)
ITEMS = [{"item_id": "I1", "sku": "A", "amount": "150", "quantity": 3},
         {"item_id": "I2", "sku": "B", "amount": "50"}]


def shop(condition: str = "PCT", **extra: Any) -> Program:
    """10 % of each line (PCT), or the same promised for 3 days (LATE); redemptions under R."""
    return program_from({
        "timezone": "UTC", "rounding": {"decimals": 2},
        "earn_conditions": [{"code": "PCT", "allocation": {"type": "prorated", "percent": 10}},
                            {"code": "LATE", "allocation": {"type": "prorated", "percent": 10}, "delay_days": 3}],
        "rule_sets": {"TransactionAdd": [{"name": "earn", "rules": [{"name": "pct", "actions": [
            {"type": "allocate", "condition": condition, "line_items": {"use_proportions": True}}]}]}]},
        **extra,
    })


def day(n: int, hour: int = 10) -> str:
    return f"2024-03-{n:02d}T{hour:02d}:00:00+00:00"


def buy(event_id: str, when: str, bill: str = "B1", **payload: Any) -> Envelope:
    return activity("TransactionAdd", event_id, when, bill_number=bill, amount="200", line_items=ITEMS, **payload)


def give_back(event_id: str, when: str, bill: str = "B1", customer: str = "c1", **payload: Any) -> Envelope:
    """A return of `bill`: of what `payload` names, else of the whole bill."""
    return activity("TransactionReturn", event_id, when, customer=customer, bill_number=bill,
                    **(payload or {"whole_bill": True}))


def topped_up(event_id: str = "a0", points: str = "100") -> Envelope:
    return activity("ManualAdjustment", event_id, day(1, 8), direction="add", points=points, reason="start",
                    operator_id="op")


_offsets: dict[str, int] = {}


def src(activity: Envelope) -> SourceRef:
    """The activity's own topic, at the next offset of that topic."""
    topic = TOPIC_OF_ACTIVITY[type(activity).__name__]
    _offsets[topic] = _offsets.get(topic, -1) + 1
    return SourceRef(topic=topic, partition=0, offset=_offsets[topic])


def run(program: Program, activities: list[tuple[Envelope, SourceRef | None]],
        state: CustomerState | None = None) -> tuple[list[Outcome], CustomerState]:
    outcomes = []
    for event, source in activities:
        outcome = apply(state, event, program, source)
        state = outcome.state
        outcomes.append(outcome)
    assert state is not None
    return outcomes, state


def ledger_bytes(outcomes: list[Outcome]) -> list[bytes]:
    return [encode(entry) for outcome in outcomes for entry in outcome.ledger]


def same_state(a: CustomerState, b: CustomerState) -> None:
    """Equal stored forms, but for the order the event ids were seen in."""
    left, right = state_to_dict(a), state_to_dict(b)
    assert sorted(left.pop("recent_event_ids")) == sorted(right.pop("recent_event_ids"))
    assert left == right


def in_order_and_parked(program: Program, first: Envelope, waiting: Envelope,
                        before: tuple[Envelope, ...] = ()) -> tuple[list[Outcome], list[Outcome], CustomerState]:
    """`first` then `waiting`, and `waiting` then `first` (each with its own source): the same ledger and state."""
    sources = {e.event_id: src(e) for e in (*before, first, waiting)}
    prefix = [(e, sources[e.event_id]) for e in before]
    in_order, ordered = run(program, [*prefix, (first, sources[first.event_id]), (waiting, sources[waiting.event_id])])
    parked, state = run(program, [*prefix, (waiting, sources[waiting.event_id]), (first, sources[first.event_id])])
    waited = parked[len(before)]
    assert waited.ledger == [] and waited.rejected is None and waited.given_up == []
    assert len(waited.parked) == 1 and waiting.event_id in waited.parked[0]
    assert ledger_bytes(in_order) == ledger_bytes(parked)  # ids, amounts, lots, seq, times, sources
    same_state(ordered, state)
    assert state.parked == []
    return in_order, parked, state


# Resolution ---------------------------------------------------------------------------------------------

def test_a_return_read_before_its_purchase_gives_the_ledger_of_the_two_in_order() -> None:
    ret = give_back("r1", day(2), line_items=[{"item_id": "I1", "quantity": 1}])
    _, parked, _ = in_order_and_parked(shop(), buy("t1", day(1)), ret)
    ledger = parked[1].ledger
    assert [(e.kind, e.line_item_id, e.amount) for e in ledger] == [
        (LedgerKind.EARN, "I1", D("15.00")), (LedgerKind.EARN, "I2", D("5.00")),
        (LedgerKind.RETURN, "I1", D("-5.00"))]
    clawed = ledger[2]
    assert (clawed.source_event_id, clawed.source_type, clawed.lot_id) == ("r1", "TransactionReturn", ledger[0].lot_id)
    assert clawed.occurred_at == datetime.fromisoformat(day(2))  # the return's own event time
    assert clawed.source is not None and clawed.source.topic == "transaction-return"
    change = parked[1].balance_change
    assert change is not None and change.current == D("15.00") and change.cause_event_id == "t1"


def test_a_parked_return_runs_at_its_own_event_time_after_what_fell_due_by_then() -> None:
    """Promised for 3 days: the return 5 days later claws current points, after the conversion, as in order."""
    _, parked, _ = in_order_and_parked(shop("LATE"), buy("t1", day(1)), give_back("r1", day(6)))
    assert [e.kind for e in parked[1].ledger] == [LedgerKind.PROMISE] * 2 + [LedgerKind.CONVERT] * 2 + [
        LedgerKind.RETURN] * 2


def test_an_unlock_read_before_its_purchase_converts_its_points_as_in_order() -> None:
    unlock = activity("PointsUnlock", "u1", day(2), bill_number="B1")
    _, parked, state = in_order_and_parked(shop("LATE"), buy("t1", day(1)), unlock)
    converted = [e for e in parked[1].ledger if e.kind == LedgerKind.CONVERT]
    assert [(e.source_event_id, e.reason, e.occurred_at) for e in converted] == [
        ("u1", "unlocked", datetime.fromisoformat(day(2)))] * 2
    assert (state.current, state.promised) == (D("20.00"), D(0))


def test_a_reversal_read_before_its_redemption_gives_the_points_back_as_in_order() -> None:
    redeem = activity("PointsRedemption", "p1", day(2), points="40", redemption_id="R-1")
    reverse = activity("RedemptionReversal", "v1", day(3), redemption_id="R-1")
    _, parked, state = in_order_and_parked(shop(), redeem, reverse, before=(topped_up(),))
    assert [(e.kind, e.amount, e.source_event_id) for e in parked[2].ledger] == [
        (LedgerKind.REDEEM, D(-40), "p1"), (LedgerKind.REVERSE, D(40), "v1")]
    assert parked[2].redemption_result is not None and state.current == D(100)


def test_what_one_purchase_resolves_runs_in_event_order_and_a_refused_one_is_dead_lettered() -> None:
    prog = shop("LATE")
    outcomes, state = run(prog, [
        (activity("PointsUnlock", "u1", day(3), bill_number="B1"), None),
        (give_back("r1", day(2), line_items=[{"item_id": "I2"}]), None),
        (give_back("r2", day(2, 11), line_items=[{"item_id": "I9"}]), None),  # no such line on B1
        (buy("t1", day(1)), None),
    ])
    after = outcomes[-1]
    assert [(e.kind, e.source_event_id) for e in after.ledger] == [
        (LedgerKind.PROMISE, "t1"), (LedgerKind.PROMISE, "t1"), (LedgerKind.RETURN, "r1"),
        (LedgerKind.CONVERT, "u1")]
    [refused] = after.given_up
    assert (refused.activity.event_id, refused.error_class) == ("r2", "rejected_by_program")
    assert "I9" in refused.reason and after.rejected is None and state.parked == []


def test_a_whole_return_of_a_bill_paid_with_points_gives_them_back_now_and_claws_when_the_purchase_comes() -> None:
    prog = shop()
    start, _ = run(prog, [(topped_up(), None)])
    state = start[0].state
    paid = apply(state, activity("PointsRedemption", "p1", day(1, 9), points="30", bill_number="B1"), prog)
    now = apply(paid.state, give_back("r1", day(3)), prog)
    assert [e.kind for e in now.ledger] == [LedgerKind.REVERSE] and now.state.current == D(100)
    assert "applied" in now.parked[0]
    purchase = apply(now.state, buy("t1", day(1)), prog)
    assert [(e.kind, e.source_event_id) for e in purchase.ledger] == [
        (LedgerKind.EARN, "t1"), (LedgerKind.EARN, "t1"), (LedgerKind.RETURN, "r1"), (LedgerKind.RETURN, "r1")]
    assert purchase.state.current == D(100) and purchase.state.parked == []
    never = apply(now.state, buy("t2", day(5), bill="B2"), prog)  # purchases moved on: nothing to report
    assert never.given_up == [] and never.state.parked == []


# Giving up ----------------------------------------------------------------------------------------------

def test_purchases_past_the_window_give_it_up_with_the_reason_and_other_activity_does_not() -> None:
    prog = shop()
    registry = ProgramRegistry([prog])
    processor, store = ActivityProcessor(registry, clock=lambda: FIXED_NOW), Store()
    ret = give_back("r1", day(2))
    first = store.run(processor, "transaction-return", 5, encode(ret))
    assert first.outputs == [] and first.dead_letter is None and first.outcome is not None and first.outcome.parked
    inside = store.run(processor, "transaction-add", 0, encode(buy("t1", day(3, 9), bill="B7")))  # 23 hours
    assert outputs_of(inside, "dead-letter") == []
    other = store.run(processor, "manual-adjustment", 0, encode(activity(
        "ManualAdjustment", "a1", day(20), direction="add", points="5", reason="r", operator_id="op")))
    assert outputs_of(other, "dead-letter") == [] and decode_state(store[b"default|c1"]).parked
    past = store.run(processor, "transaction-add", 1, encode(buy("t2", day(21), bill="B8")))
    [letter] = outputs_of(past, "dead-letter")
    assert past.dead_letter is None and [d.dead_letter_id for d in past.given_up] == ["transaction-return:0:5"]
    assert letter["error_class"] == "unresolved_reference" and letter["key"] == "c1"
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("transaction-return", 0, 5)
    assert activity_adapter.validate_json(letter["value"]) == ret  # the activity it carried
    assert "'B1'" in letter["reason"] and "24 hours" in letter["reason"]
    assert [e["kind"] for e in outputs_of(past, "ledger")] == ["earn", "earn"]  # the purchase itself is fine
    assert decode_state(store[b"default|c1"]).parked == []


def test_any_activity_past_the_return_window_gives_it_up() -> None:
    prog = shop(retention={"return_window_days": 30})
    _, state = run(prog, [(give_back("r1", day(1)), None), (topped_up("a1"), None)])
    assert state.parked
    late = apply(state, activity("ManualAdjustment", "a2", "2024-03-31T10:00:00+00:00", direction="add",
                                 points="5", reason="r", operator_id="op"), prog)
    [given_up] = late.given_up
    assert "past the 30-day return window" in given_up.reason and late.state.parked == []
    assert "dropped after the 30-day return window" in given_up.reason  # what was dropped is not recorded


def test_a_purchase_already_past_the_window_gives_it_up_at_once_and_so_does_a_window_of_zero() -> None:
    outcomes, _ = run(shop(), [(buy("t1", day(5)), None), (give_back("r1", day(2), bill="B0"), None)])
    [given_up] = outcomes[1].given_up
    assert given_up.activity.event_id == "r1" and outcomes[1].state.parked == []
    registry = ProgramRegistry([shop(retention={"parking_window_hours": 0})])
    processor, store = ActivityProcessor(registry, clock=lambda: FIXED_NOW), Store()
    raw = encode(give_back("r2", day(2)))
    processed = store.run(processor, "transaction-return", 3, raw)
    [letter] = outputs_of(processed, "dead-letter")
    assert letter["error_class"] == "unresolved_reference" and "parking is off" in letter["reason"]
    assert letter["value"] == raw.decode() and processed.dead_letter is not None  # the record's own bytes


def test_a_refused_redemption_gives_up_the_reversal_waiting_for_it() -> None:
    outcomes, state = run(shop(), [
        (activity("RedemptionReversal", "v1", day(3), redemption_id="R-9"), None),
        (activity("PointsRedemption", "p1", day(2), points="1000", redemption_id="R-9"), None),
    ])
    [given_up] = outcomes[1].given_up
    assert "refused (insufficient_balance)" in given_up.reason and state.parked == []


def test_at_most_64_wait_and_the_earliest_is_given_up() -> None:
    prog = shop()
    events = [give_back(f"r{i}", f"2024-03-05T{i % 24:02d}:{i // 24:02d}:00+00:00", bill=f"B{i}") for i in range(64)]
    arrivals = [*events[1:30], events[0], *events[30:]]  # the earliest (event time) is not the first to arrive
    outcomes, state = run(prog, [(e, None) for e in arrivals])
    assert len(state.parked) == parking.PARKED_LIMIT and all(o.given_up == [] for o in outcomes)
    assert min(events, key=lambda e: e.event_time).event_id == "r0"
    more = apply(state, give_back("r64", day(5, 12), bill="B64"), prog)
    [given_up] = more.given_up
    assert given_up.activity.event_id == "r0" and "more than 64" in given_up.reason
    assert len(more.state.parked) == 64 and "r64" in {p.activity.event_id for p in more.state.parked}


# Idempotence, restarts, determinism ---------------------------------------------------------------------

def test_a_parked_activity_redelivered_is_a_duplicate() -> None:
    registry = ProgramRegistry([shop()])
    processor, store = ActivityProcessor(registry, clock=lambda: FIXED_NOW), Store()
    raw = encode(give_back("r1", day(2)))
    store.run(processor, "transaction-return", 0, raw)
    again = store.run(processor, "transaction-return", 0, raw)  # at-least-once redelivery
    retried = store.run(processor, "transaction-return", 1, raw)  # a producer retry: a new offset
    assert again.outputs == retried.outputs == [] and retried.outcome is not None and retried.outcome.duplicate
    state = decode_state(store[b"default|c1"])
    assert [p.activity.event_id for p in state.parked] == ["r1"]
    state.recent_event_ids.clear()  # out of the recent-id window: still known as parked
    assert apply(state, give_back("r1", day(2)), shop()).duplicate
    bought = store.run(processor, "transaction-add", 0, encode(buy("t1", day(1))))
    assert [e["kind"] for e in outputs_of(bought, "ledger")] == ["earn", "earn", "return", "return"]
    late = store.run(processor, "transaction-return", 2, raw)  # after it ran
    assert late.outputs == []


def test_parked_activities_survive_the_state_codec_and_run_the_same_after_a_restart() -> None:
    prog = shop()
    _, state = run(prog, [
        (give_back("r1", "2024-03-02T15:30:00.123456+05:30", line_items=[{"item_id": "I1", "quantity": "1.5"}]),
         src(give_back("x", day(1)))),
        (activity("PointsUnlock", "u1", day(2), bill_number="B1", item_ids=["I2"]), None),
    ])
    state.parked.append(Parked(activity("RedemptionReversal", "v1", day(2), redemption_id="R"), None, True))
    stored = state_to_json(state)
    restored = state_from_dict(orjson.loads(stored))
    assert restored == state and restored.parked == state.parked
    assert state_to_json(restored) == stored
    purchase = buy("t1", day(1))
    assert ledger_bytes([apply(state, purchase, prog)]) == ledger_bytes([apply(restored, purchase, prog)])
    assert "parked" not in orjson.loads(state_to_json(apply(None, purchase, prog).state))  # nothing else changes


def test_the_same_records_in_the_same_order_give_the_same_bytes() -> None:
    registry = ProgramRegistry([shop("LATE", retention={"return_window_days": 30})])
    records: list[tuple[str, int, bytes]] = [
        ("manual-adjustment", i, encode(activity("ManualAdjustment", f"a{i}", day(1, 8), customer=f"c{i}",
                                                 direction="add", points="50", reason="r", operator_id="op")))
        for i in range(3)]
    for i in range(30):
        customer = f"c{i % 3}"
        records += [
            ("transaction-return", i, encode(give_back(f"r{i}", day(2 + i % 20), bill=f"B{i}", customer=customer))),
            ("points-unlock", i, encode(activity("PointsUnlock", f"u{i}", day(3 + i % 20), customer=customer,
                                                 bill_number=f"B{i}"))),
            ("redemption-reversal", i, encode(activity("RedemptionReversal", f"v{i}", day(4), customer=customer,
                                                       redemption_id=f"R{i}"))),
        ]
    for i in range(30):
        customer = f"c{i % 3}"
        if i % 4:
            records.append(("transaction-add", i, encode(buy(f"t{i}", day(1 + i % 20), bill=f"B{i}",
                                                             customer=customer))))
        records.append(("points-redemption", i, encode(activity(
            "PointsRedemption", f"p{i}", day(1 + i % 25), customer=customer, points="5", redemption_id=f"R{i}"))))

    def outputs(state_cache: int) -> list[Any]:
        processor, store = ActivityProcessor(registry, clock=lambda: FIXED_NOW, state_cache=state_cache), Store()
        seen: list[Any] = []
        for topic, offset, raw in records:
            customer = orjson.loads(raw)["customer_id"].encode()
            processed = store.run(processor, topic, offset, raw, key=customer)
            seen += processed.outputs
        return [seen, sorted(store.items())]

    first = outputs(0)
    assert first == outputs(0) == outputs(20)
    kinds = {orjson.loads(v)["kind"] for t, v in first[0] if t == "ledger"}
    letters = {orjson.loads(v)["error_class"] for t, v in first[0] if t == "dead-letter"}
    assert {"return", "convert", "reverse"} <= kinds and "unresolved_reference" in letters


def test_a_refusal_by_the_program_has_its_own_dead_letter_class() -> None:
    registry = ProgramRegistry([shop()])
    processor, store = ActivityProcessor(registry, clock=lambda: FIXED_NOW), Store()
    deduct = activity("ManualAdjustment", "a1", day(1), direction="deduct", points="5", reason="r", operator_id="op")
    [letter] = outputs_of(store.run(processor, "manual-adjustment", 0, encode(deduct)), "dead-letter")
    assert letter["error_class"] == "rejected_by_program" and "balance" in letter["reason"]


def test_the_scheduler_wakes_an_idle_customer_to_give_up_a_return_whose_purchase_never_came() -> None:
    """Nothing else happens to the customer: the due index still names the end of the return window, and the
    scheduler's evaluation then gives the return up (dead-lettered instead of waiting forever)."""
    from loyalty_stream.engine.lifecycle import due_activity, next_transition

    prog = shop(retention={"return_window_days": 30})
    _, state = run(prog, [(give_back("r1", day(1)), None)])
    assert state.parked
    due = next_transition(state, prog)
    assert due is not None and due.kind == "PointsExpiry"
    assert due.at == datetime(2024, 3, 31, 10, tzinfo=UTC)  # 1 March 10:00 + 30 days
    woken = apply(state, due_activity("default", "c1", due.at, due.kind, "sched-1"), prog)
    [given_up] = woken.given_up
    assert given_up.activity.event_id == "r1" and "past the 30-day return window" in given_up.reason
    assert woken.state.parked == [] and next_transition(woken.state, prog) is None


def test_lots_due_before_the_give_up_stay_first_in_line() -> None:
    prog = shop("LATE", retention={"return_window_days": 30})
    _, state = run(prog, [(buy("t1", day(1)), None), (give_back("r1", day(2), bill="B9"), None)])
    from loyalty_stream.engine.lifecycle import next_transition

    due = next_transition(state, prog)
    assert due is not None and due.kind == "DelayedAccrual"  # the promised points (3 days) come before
