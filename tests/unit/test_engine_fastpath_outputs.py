"""The outputs' encoding fast paths give exactly the bytes of the plain encoding: `json_default`'s date-times
and last source reference (`json_out._JSON_TIMES`, `_LastSource`, by identity) against orjson's and pydantic's
own writing, whatever the order and the reuse of the objects, and `effects.encode_outputs` (compiled) against
encoding each output of a real outcome with `events.codec.encode`, in the processor's order."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import workload
from loyalty_stream.engine.effects import Outcome, encode_outputs
from loyalty_stream.engine.json_out import encode_contract, json_default
from loyalty_stream.events.codec import encode
from loyalty_stream.events.outputs import Bucket, LedgerEntry, LedgerKind, SourceRef
from loyalty_stream.stream.processor import (
    BALANCE_CHANGES,
    COUPONS,
    LEDGER,
    NOTIFICATIONS,
    REDEMPTION_RESULTS,
    TIER_CHANGES,
    ActivityProcessor,
)

from .test_codec_fastpath_process import plain

TOPICS = (LEDGER, BALANCE_CHANGES, NOTIFICATIONS, REDEMPTION_RESULTS, TIER_CHANGES, COUPONS)
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8)),
         timezone(timedelta(seconds=1, microseconds=5))]
BASE = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
# A pool of date-time objects: equal instants in other zones (equal, other text), copies of one value (equal, same
# text, other objects), several sources (equal copies too), reused in any order.
POOL = [(BASE + timedelta(minutes=7 * i, microseconds=i % 3)).astimezone(ZONES[i % len(ZONES)]) for i in range(12)]
POOL += [(POOL[i] + timedelta(0)).replace() for i in range(0, 12, 3)]
SOURCES = [SourceRef(topic=f"t{i % 2}", partition=i % 3, offset=i) for i in range(4)]
SOURCES += [SourceRef(topic=s.topic, partition=s.partition, offset=s.offset) for s in SOURCES]  # equal copies


def entry(at: datetime, expires_at: datetime | None, available_at: datetime | None,
          source: SourceRef | None) -> LedgerEntry:
    return LedgerEntry.model_construct(
        entry_id="le-1", seq=3, customer_id="c1", program_id="p1", program_version=2, kind=LedgerKind.EARN,
        bucket=Bucket.CURRENT, amount=Decimal("12.50"), desired_amount=None, balance_after=Decimal("100"),
        promised_after=Decimal("0.00"), lot_id=None, source_event_id="e1", source_type="TransactionAdd",
        source=source, condition_code=None, rule=None, line_item_id=None, bill_number=None, redemption_id=None,
        available_at=available_at, expires_at=expires_at, occurred_at=at, reason=None, operator_id=None,
        shortfall=None)


pick_time = st.integers(0, len(POOL) - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(pick_time, st.none() | pick_time, st.none() | pick_time,
                          st.none() | st.integers(0, len(SOURCES) - 1)), min_size=1, max_size=30))
def test_recent_date_times_and_sources_give_orjsons_and_pydantics_bytes(
        picks: list[tuple[int, int | None, int | None, int | None]]) -> None:
    for at, expires, available, source in picks:
        message = entry(POOL[at], None if expires is None else POOL[expires],
                        None if available is None else POOL[available], None if source is None else SOURCES[source])
        raw = encode_contract(message)
        assert raw == plain(message)
        assert raw == message.__pydantic_serializer__.to_json(message)
        assert raw == encode(message)


def test_equal_date_times_of_other_offsets_keep_their_text() -> None:
    india = POOL[0].astimezone(timezone(timedelta(hours=5, minutes=30)))
    for at in [POOL[0], india, POOL[0], india, *POOL, india]:
        assert encode_contract(entry(at, None, None, None)) == plain(entry(at, None, None, None))
    assert b'"2024-03-01T17:30:00+05:30"' in encode_contract(entry(india, None, None, None))


def test_a_source_orjson_cannot_write_falls_back_as_the_codec_does() -> None:
    bad = SourceRef.model_construct(topic="t\ud800", partition=1, offset=2)  # a lone surrogate: pydantic refuses too
    message = entry(POOL[0], None, None, bad)
    with pytest.raises(ValueError) as plain_error:
        encode(message)
    with pytest.raises(ValueError) as fast_error:
        encode_contract(message)
    assert type(fast_error.value) is type(plain_error.value)
    good = entry(POOL[0], None, None, SOURCES[0])
    assert encode_contract(good) == plain(good)
    huge = SourceRef.model_construct(topic="t", partition=2**70, offset=2)  # beyond 64 bits
    message = entry(POOL[1], None, None, huge)
    assert encode_contract(message) == encode(message) == message.__pydantic_serializer__.to_json(message)


def test_json_default_as_before_for_other_values() -> None:
    assert json_default(Decimal("-0.00")) == "-0.00"
    with pytest.raises(TypeError):
        json_default(object())


def test_encode_outputs_gives_each_outputs_codec_bytes_in_the_processors_order() -> None:
    registry = workload.load_registry()
    processor = ActivityProcessor(registry, lambda: datetime(2026, 1, 1, tzinfo=UTC))
    store: dict[bytes, bytes] = {}
    kinds: set[str] = set()
    records = workload.generate(400, 40, seed=5, days=60)
    random.Random(5).shuffle(records[200:])  # some out of order: parked, given up
    for record in records:
        processed = processor.process(record.topic, record.partition, record.offset, record.key, record.value,
                                      store.get, source_topic=record.real_topic or None)
        if processed.state is not None and processed.state_key is not None:
            store[processed.state_key] = processed.state
        outcome = processed.outcome
        if outcome is None:
            continue
        expected = [(LEDGER, encode(m)) for m in outcome.ledger]
        expected += [(BALANCE_CHANGES, encode(outcome.balance_change))] if outcome.balance_change else []
        expected += [(NOTIFICATIONS, encode(m)) for m in outcome.notifications]
        expected += [(REDEMPTION_RESULTS, encode(outcome.redemption_result))] if outcome.redemption_result else []
        expected += [(TIER_CHANGES, encode(m)) for m in outcome.tier_changes]
        expected += [(COUPONS, encode(m)) for m in outcome.coupons]
        got: list[tuple[str, bytes]] = []
        encode_outputs(outcome, TOPICS, got)
        assert got == expected
        if not outcome.duplicate:
            assert processed.outputs[:len(expected)] == expected
        kinds.update(topic for topic, _ in got)
    assert {LEDGER, BALANCE_CHANGES, NOTIFICATIONS, REDEMPTION_RESULTS} <= kinds


def test_encode_outputs_of_an_empty_outcome() -> None:
    from loyalty_stream.engine.state import new_state

    got: list[tuple[str, bytes]] = []
    encode_outputs(Outcome(new_state("c", "p")), TOPICS, got)
    assert got == []
