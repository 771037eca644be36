"""The fast paths of a ledger entry's bookkeeping give what the plain computation gives: an entry's values are a
copy of the last entry's with only the fields whose objects differ set (`effects._Written`), and the current
balance is the current lots' sum itself while the debt is the exact `0` read at the start (`Effects.no_debt`)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from hashlib import blake2b
from typing import Any

import pytest

from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.state import ZERO, Lot, new_state
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.events.outputs import Bucket, LedgerEntry, LedgerKind, SourceRef
from loyalty_stream.program.model import Program
from tests.unit.conftest import activity

D = Decimal
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def reference_id(prefix: str, *parts: object) -> str:
    raw = "\x1f".join("" if p is None else str(p) for p in parts)
    return prefix + "-" + blake2b(raw.encode(), digest_size=10).hexdigest()


def plain_values(fx: Effects, seq: int, call: dict[str, Any], activity_at: Envelope, source: SourceRef | None,
                 balance: Decimal) -> dict[str, Any]:
    """An entry's fields as `Effects.entry` documents them, every one set from the call's arguments."""
    lot: Lot | None = call.get("lot")
    scheduled = call.get("scheduled", False)
    cause = lot.source_event_id if lot is not None and scheduled else activity_at.event_id
    return {
        "type": "LedgerEntry",
        "entry_id": reference_id("le", cause, call["kind"], str(fx.program.version), *call["key"]),
        "seq": seq,
        "customer_id": fx.state.customer_id,
        "program_id": fx.state.program_id,
        "program_version": fx.program.version,
        "kind": call["kind"],
        "bucket": call["bucket"],
        "amount": call["amount"],
        "desired_amount": call.get("desired_amount"),
        "balance_after": balance,
        "promised_after": fx.held_promised,
        "lot_id": lot.lot_id if lot is not None else call.get("lot_id"),
        "source_event_id": cause,
        "source_type": call.get("source_type") or type(activity_at).__name__,
        "source": None if scheduled else source,
        "condition_code": call.get("condition_code", lot.condition_code if lot is not None else None),
        "rule": call.get("rule"),
        "line_item_id": call.get("line_item_id", lot.line_item_id if lot is not None else None),
        "bill_number": call.get("bill_number", lot.bill_number if lot is not None else None),
        "redemption_id": call.get("redemption_id"),
        "available_at": lot.available_at if lot is not None else None,
        "expires_at": lot.expires_at if lot is not None else None,
        "occurred_at": call.get("at") or activity_at.event_time,
        "reason": call.get("reason"),
        "operator_id": call.get("operator_id"),
        "shortfall": call.get("shortfall"),
    }


def _lot(n: int, rng: random.Random) -> Lot:
    when = T0 + timedelta(days=n % 3)  # (a few distinct objects, each shared by several lots)
    return Lot(f"lot-{n}", D(n), D(n), False, T0, rng.choice([None, when]), rng.choice([None, when]), f"src-{n % 4}",
               condition_code=rng.choice([None, "BASE", "BONUS"]), bill_number=rng.choice([None, "B1", "B2"]),
               line_item_id=rng.choice([None, "L1", "L2"]))


@pytest.mark.parametrize("seed", range(12))
def test_every_entry_has_the_fields_the_plain_computation_gives(default_program: Program, seed: int) -> None:
    """Random entries drawn from small pools of values (so that fields repeat, change and go back to None),
    made for the activity, on behalf of another, from another source, scheduled or at a given time."""
    rng = random.Random(seed)
    first: Envelope = activity("Engagement", "e1", "2024-05-01T10:00:00+02:00", event_name="page_view")
    other: Envelope = activity("Registration", "e2", "2024-05-02T11:00:00+00:00")
    read_at, elsewhere = SourceRef(topic="t", partition=0, offset=7), SourceRef(topic="t", partition=1, offset=3)
    fx = Effects(new_state("c1", default_program.id), first, default_program, read_at)
    lots = [_lot(n, rng) for n in range(6)]
    pools: dict[str, list[Any]] = {
        "desired_amount": [D("1.5"), D("2")], "rule": ["r1", "r2"], "redemption_id": ["rd-1", "rd-2"],
        "reason": ["why", "because"], "operator_id": ["op"], "shortfall": [D("0.5")],
        "source_type": ["PointsExpiry", "DelayedAccrual"], "at": [T0, T0 + timedelta(hours=1)],
        "condition_code": ["C9"], "line_item_id": ["L9"], "bill_number": ["B9"],
    }
    made: list[tuple[LedgerEntry, dict[str, Any]]] = []
    for n in range(60):
        before = fx.act_for(other) if rng.random() < 0.2 else None
        source = fx.source = elsewhere if rng.random() < 0.2 else read_at
        call: dict[str, Any] = {"kind": rng.choice(list(LedgerKind)), "bucket": rng.choice(list(Bucket)),
                                "amount": D(rng.choice(["1", "-2.5", "0"])), "key": (f"k{n}", rng.choice([1, None]))}
        if rng.random() < 0.6:
            call["lot"] = rng.choice(lots)
            call["scheduled"] = rng.random() < 0.3
        elif rng.random() < 0.5:
            call["lot_id"] = "lot-x"
        for name, pool in pools.items():
            if rng.random() < 0.3:
                call[name] = rng.choice(pool)
        entry = fx.entry(**call)
        expected = plain_values(fx, fx.state.seq, call, fx.activity, source, fx.held - fx.state.debt)
        made.append((entry, expected))
        if before is not None:
            fx.restore(before)
        fx.source = read_at
    assert len({entry.__dict__["kind"] for entry, _ in made}) > 1
    for entry, expected in made:
        assert list(entry.__dict__) == list(LedgerEntry.model_fields)
        assert entry.__dict__ == expected
        assert entry == LedgerEntry.model_construct(**expected)
        # (identical objects, not only equal ones: scales and zones as the arguments gave them)
        assert [str(value) for value in entry.__dict__.values()] == [str(value) for value in expected.values()]


@pytest.mark.parametrize("debt", ["0", "0.00", "-0", "0E+1", "2.50"])
def test_the_balance_after_is_lots_minus_debt_to_the_scale(default_program: Program, debt: str) -> None:
    state = new_state("c1", default_program.id)
    state.lots = [Lot("lot-a", D("5"), D("5"), False, T0, None, None, "src"),
                  Lot("lot-b", D("1.5"), D("1.5"), True, T0, None, None, "src")]
    state.debt = D(debt)  # (an object of its own, as decoded)
    fx = Effects(state, activity("Engagement", "e1", "2024-05-01T10:00:00+00:00", event_name="x"), default_program,
                 None)
    assert (fx.no_debt is not None) == (debt == "0")
    assert str(fx.current) == str(fx.current_before) == str(D("5") - D(debt))
    fx.entry(kind=LedgerKind.ADJUST, bucket=Bucket.CURRENT, amount=ZERO, key=("a",))
    assert str(fx.outcome.ledger[-1].balance_after) == str(D("5") - D(debt))
    state.debt = D("0")  # changed during the activity (a return's debt, paid off): another object
    fx.entry(kind=LedgerKind.ADJUST, bucket=Bucket.CURRENT, amount=ZERO, key=("b",))
    assert str(fx.outcome.ledger[-1].balance_after) == str(D("5") - D("0")) == "5"
    state.debt = D("0.0")
    fx.entry(kind=LedgerKind.ADJUST, bucket=Bucket.CURRENT, amount=ZERO, key=("c",))
    assert str(fx.outcome.ledger[-1].balance_after) == "5.0"
    outcome = fx.finish()
    assert outcome.balance_change is not None
    assert str(outcome.balance_change.current) == "5.0"
    assert str(outcome.balance_change.delta_current) == str(D("5.0") - (D("5") - D(debt)))


POINTS = ["1", "1.5", "2.25", "0.125", "3.00", "0", "0.00", "10", "0.5", "7.10"]


@pytest.mark.parametrize("seed", range(40))
def test_the_running_balances_keep_the_lots_scale_through_any_changes(default_program: Program, seed: int) -> None:
    """The buckets' totals re-scaled only when a term that had their exponent left and no lot has it any more
    (`Effects._left`): after every change they read as the lots' sums do (`check_balances`), to the scale."""
    rng = random.Random(seed)
    state = new_state("c1", default_program.id)
    for n in range(rng.randrange(6)):
        points = D(rng.choice(POINTS))
        state.lots.append(Lot(f"old-{n}", points, points, rng.random() < 0.5, T0, None, None, "src"))
    fx = Effects(state, activity("Engagement", "e1", "2024-05-01T10:00:00+00:00", event_name="x"), default_program,
                 None)
    fx.check_balances()
    for step in range(40):
        lots = state.lots
        op = rng.choice(["credit", "take", "give", "empty", "unpromise", "forget"])
        if op == "credit" or not lots:
            fx.credit(points=D(rng.choice(POINTS)), key=(f"k{step}",), promised=rng.random() < 0.5)
        elif op == "take":
            lot = rng.choice(lots)
            fx.take(lot, min(lot.remaining, D(rng.choice(POINTS))))
        elif op == "give":
            fx.give(rng.choice(lots), D(rng.choice(POINTS)))
        elif op == "empty":
            fx.empty(rng.choice(lots))
        elif op == "unpromise":
            fx.unpromise(rng.choice(lots))
        else:
            dropped = [lot for lot in lots if not lot.remaining and rng.random() < 0.7]
            fx.forget(dropped)
            state.lots = [lot for lot in lots if all(lot is not gone for gone in dropped)]
        fx.check_balances()
