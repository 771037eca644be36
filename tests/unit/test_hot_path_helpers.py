"""Helpers rewritten for speed give exactly what the straightforward versions gave."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from hashlib import blake2b
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from bench import workload
from loyalty_stream.engine import expiry, lifecycle, periods
from loyalty_stream.engine.contracts import trusted
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.ids import derive_id
from loyalty_stream.engine.line_items import distribute
from loyalty_stream.engine.state import Lot, new_state
from loyalty_stream.events.activities import CustomerUpdate, Registration, activity_adapter
from loyalty_stream.events.codec import encode
from loyalty_stream.events.outputs import (
    Bucket,
    ConsumedLot,
    DeadLetter,
    LedgerEntry,
    LedgerKind,
    SourceRef,
    TierChange,
)
from loyalty_stream.stream.processor import ActivityProcessor


def reference_distribute(total: Decimal, weights: list[Decimal], quantum: Decimal) -> list[Decimal]:
    """The original split: weights scaled to integers by their decimal places, largest remainders."""
    if not weights:
        return []
    if total < 0:
        return [-share for share in reference_distribute(-total, weights, quantum)]
    units = int(total / quantum)
    places = max(max((-int(w.as_tuple().exponent) for w in weights if w > 0), default=0), 0)
    ints = [int(w.scaleb(places)) if w > 0 else 0 for w in weights]
    if not any(ints):
        ints = [1] * len(weights)
    whole = sum(ints)
    floors = [units * w // whole for w in ints]
    leftover = units - sum(floors)
    order = sorted(range(len(ints)), key=lambda i: (-(units * ints[i] % whole), i))
    for position in range(leftover):
        floors[order[position % len(order)]] += 1
    return [Decimal(f) * quantum for f in floors]


weights = st.lists(st.tuples(st.integers(-50, 10**7), st.integers(-6, 2)).map(
    lambda pair: Decimal(pair[0]).scaleb(pair[1])), min_size=1, max_size=6)


@given(st.integers(-10**6, 10**6), weights, st.integers(0, 3))
def test_distribute_splits_exactly_as_before(units: int, parts: list[Decimal], decimals: int) -> None:
    quantum = Decimal(1).scaleb(-decimals)
    total = Decimal(units) * quantum
    shares = distribute(total, parts, quantum)
    assert [str(s) for s in shares] == [str(s) for s in reference_distribute(total, parts, quantum)]
    assert sum(shares, Decimal(0)) == total


def test_derive_id_is_unchanged() -> None:
    raw = "\x1f".join(["ev-1", "", "earn", "1", "0.50"]).encode()
    assert derive_id("le", "ev-1", None, LedgerKind.EARN, 1, Decimal("0.50")) == (
        "le-" + blake2b(raw, digest_size=10).hexdigest())
    assert derive_id("x") == "x-" + blake2b(b"", digest_size=10).hexdigest()


def test_trusted_builds_what_model_construct_builds() -> None:
    at = datetime(2024, 5, 1, 10, 30, 0, 123456, tzinfo=UTC)
    values = {
        "type": "LedgerEntry", "entry_id": "le-1", "seq": 3, "customer_id": "c1", "program_id": "p",
        "program_version": 2, "kind": LedgerKind.REDEEM, "bucket": Bucket.CURRENT, "amount": Decimal("-1.50"),
        "desired_amount": None, "balance_after": Decimal("0"), "promised_after": Decimal("0.00"), "lot_id": "l1",
        "source_event_id": "e1", "source_type": "PointsRedemption",
        "source": SourceRef.model_construct(topic="t", partition=1, offset=5), "condition_code": None,
        "rule": "r", "line_item_id": None, "bill_number": "B1", "redemption_id": "R1", "available_at": None,
        "expires_at": at, "occurred_at": at, "reason": None, "operator_id": None, "shortfall": None,
    }
    fast = trusted(LedgerEntry, dict(values))
    slow = LedgerEntry.model_construct(**values)
    assert fast == slow and encode(fast) == encode(slow)
    assert fast.model_dump() == slow.model_dump() and fast.model_fields_set == slow.model_fields_set
    assert LedgerEntry.model_validate_json(encode(fast)) == slow


def test_transition_helper_builds_the_named_tuple() -> None:
    lot = Lot("l1", Decimal(1), Decimal(1), True, datetime(2024, 1, 1, tzinfo=UTC), None, None, "e1", "earn")
    at = datetime(2024, 2, 1, tzinfo=UTC)
    for args in ((at, lifecycle.CONVERT, "l1", lot), (at, lifecycle.REMIND, "k", lot, 7)):
        fast, plain = lifecycle._transition(*args), lifecycle.Transition(*args)
        assert type(fast) is lifecycle.Transition and fast == plain and fast._asdict() == plain._asdict()


@given(st.dates(), st.sampled_from(["day", "calendar_week", "calendar_month", "calendar_year", "lifetime"]))
def test_remembered_period_label_is_the_computed_one(local: date, period: Any) -> None:
    assert periods.period_label(local, period) == periods.period_label.__wrapped__(local, period)


def test_roll_kinds_by_class_are_the_isinstance_tests() -> None:
    registry = workload.load_registry()
    program = registry.get(workload.PROGRAM_ID)
    assert program is not None
    seen = set()
    for record in workload.generate(300, 40, seed=5):
        event = activity_adapter.validate_json(record.value or b"")
        fx = Effects(new_state(event.customer_id, event.program_id), event, program, None)
        expiry.roll_expiry(fx, Decimal(0))
        seen.add(type(event))
        assert expiry._ROLL_KINDS[type(event)] == (isinstance(event, expiry.ROLLING_EVENTS),
                                                   isinstance(event, Registration | CustomerUpdate))
    assert len(seen) >= 4


def test_encode_writes_what_pydantic_writes_for_every_output_and_activity() -> None:
    registry = workload.load_registry()
    processor = ActivityProcessor(registry, clock=lambda: datetime(2030, 1, 1, tzinfo=UTC))
    store: dict[bytes, bytes] = {}
    seen: set[str] = set()
    for record in workload.generate(1500, 150, seed=3, days=200):
        parsed = activity_adapter.validate_json(record.value or b"")
        assert encode(parsed) == parsed.__pydantic_serializer__.to_json(parsed)
        processed = processor.process(record.topic, record.partition, record.offset, record.key, record.value,
                                      store.get)
        if processed.state is not None and processed.state_key is not None:
            store[processed.state_key] = processed.state
        outcome = processed.outcome
        if outcome is None:
            continue
        for message in [*outcome.ledger, outcome.balance_change, *outcome.notifications, outcome.redemption_result,
                        *outcome.tier_changes, *outcome.coupons]:
            if message is not None:
                assert encode(message) == message.__pydantic_serializer__.to_json(message)
                seen.add(type(message).__name__)
    assert {"LedgerEntry", "BalanceChange", "Notification", "RedemptionResult", "TierChange"} <= seen


zones = st.sampled_from([UTC, timezone(timedelta(0)), ZoneInfo("Europe/London"), ZoneInfo("Asia/Kolkata"),
                         timezone(timedelta(hours=-3, minutes=-30))])


@given(st.text(), st.datetimes(timezones=zones), st.decimals(allow_nan=False, allow_infinity=False),
       st.integers(0, 2**40))
def test_encode_writes_what_pydantic_writes_for_any_text_time_and_amount(text: str, at: datetime, amount: Decimal,
                                                                       number: int) -> None:
    letter = DeadLetter.model_construct(
        type="DeadLetter", dead_letter_id=text, reason=text, error_class="schema_violation", topic=text,
        partition=number, offset=number, key=None, value=text, value_encoding="utf-8", failed_at=at)
    change = trusted(TierChange, {"type": "TierChange", "change_id": text, "customer_id": "c", "program_id": "p",
                                  "from_tier": None, "to_tier": text, "reason": str(amount),
                                  "cause_event_id": "e", "occurred_at": at})
    consumed = ConsumedLot.model_construct(lot_id=text, points=amount, expires_at=at)
    for message in (letter, change, consumed):
        assert encode(message) == message.__pydantic_serializer__.to_json(message)
