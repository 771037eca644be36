"""The fast state codec gives exactly the stored form of the plain one: lots that did not change encode as the
JSON they were stored as, bills and redemptions are decoded only when read, and the processor's cache of
decoded states never shows in what it stores or sends."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from bench import workload
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.state import (
    Bill,
    Lot,
    Parked,
    StoredRows,
    copy_state,
    new_state,
    state_from_dict,
    state_to_dict,
    state_to_json,
)
from loyalty_stream.events.activities import activity_adapter
from loyalty_stream.events.outputs import SourceRef
from loyalty_stream.replay.runner import Record
from loyalty_stream.stream import processor as processor_module
from loyalty_stream.stream.processor import ActivityProcessor, decode_state, encode_state

from .conftest import activity, states_after

FIXED_NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def stored_states() -> list[bytes]:
    """Customer states of a realistic run (lots, bills, redemptions, counters, caps)."""
    registry = workload.load_registry()
    processor = ActivityProcessor(registry, clock=lambda: FIXED_NOW)
    store = states_after(processor, workload.generate(1500, 120, seed=31, days=120))
    return sorted(store.values(), key=len)


def test_fast_encoding_is_the_plain_encoding(stored_states: list[bytes]) -> None:
    for raw in stored_states:
        state = decode_state(raw)
        assert state_to_json(state) == orjson.dumps(state_to_dict(state)) == raw
        assert state_from_dict(orjson.loads(raw)) == state


CHANGES: dict[str, Any] = {
    "lot_id": "other", "points": Decimal("1.50"), "remaining": Decimal("0.50"), "promised": True,
    "earned_at": datetime(2024, 1, 1, tzinfo=UTC), "available_at": datetime(2024, 1, 2, tzinfo=UTC),
    "expires_at": datetime(2030, 1, 2, tzinfo=UTC), "source_event_id": "x", "origin": "adjust",
    "condition_code": "C", "bill_number": "B-x", "line_item_id": "L-x", "expiry_code": "E", "rolling": True,
    "reminded": (7,), "cap_keys": ("cap:x",), "shortfall": Decimal("0.25"),
}


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(Lot) if f.compare])
def test_a_changed_lot_field_is_encoded_afresh(stored_states: list[bytes], name: str) -> None:
    raw = stored_states[-1]
    state = decode_state(raw)
    state_to_json(state)  # the lots now carry their stored row
    lot = state.lots[0]
    setattr(lot, name, CHANGES[name])
    encoded = state_to_json(state)
    assert encoded == orjson.dumps(state_to_dict(state)) != raw
    assert getattr(decode_state(encoded).lots[0], name) == CHANGES[name]


def test_the_same_value_in_another_scale_is_a_change() -> None:
    """"10.0" and "10.00" are equal Decimals but different stored text: identity, not equality, decides."""
    state = new_state("c1", "bench")
    state.lots = [Lot("l1", Decimal("10.00"), Decimal("10.00"), False, datetime(2024, 1, 1, tzinfo=UTC), None,
                      None, "e")]
    state = decode_state(encode_state(state))
    state_to_json(state)
    state.lots[0].remaining = Decimal("10.0")
    assert b'"10.0"' in state_to_json(state)


def test_bills_and_redemptions_are_decoded_only_when_read(stored_states: list[bytes]) -> None:
    raw = next(r for r in reversed(stored_states) if b'"redemptions":{"' in r)
    state = decode_state(raw)
    bills, redemptions = state.bills, state.redemptions
    assert type(bills) is StoredRows and type(redemptions) is StoredRows
    assert all(type(v) is list for v in bills.peek_all().values())
    number = next(iter(bills))
    assert number in bills and len(bills) == len(orjson.loads(raw)["bills"])
    assert type(bills.peek_all()[number]) is list  # membership and size decode nothing
    bill = bills[number]
    assert isinstance(bill, Bill) and bills.peek_all()[number] is bill  # decoded once, in place
    assert list(bills) == list(orjson.loads(raw)["bills"])  # the stored order is kept
    bill.returned_amount += Decimal(1)
    assert state_to_json(state) == orjson.dumps(state_to_dict(state)) != raw
    assert dict(bills.items()) == dict(decode_state(raw).bills.items()) | {number: bill}
    assert repr(state.redemptions).startswith("{")


def test_rows_are_never_changed_by_decoding_them(stored_states: list[bytes]) -> None:
    data = orjson.loads(stored_states[-1])
    before = orjson.dumps(data)
    state = state_from_dict(data)
    assert state == state_from_dict(orjson.loads(before))  # decodes every bill and redemption
    state.lots[0].remaining += Decimal(1)
    state_to_json(state)
    assert orjson.dumps(data) == before


# The processor's cache of decoded states -------------------------------------------------------------------

def _records() -> list[Record]:
    return workload.generate(400, 20, seed=41, days=60)


def test_a_failing_activity_leaves_the_cached_state_as_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = workload.load_registry()
    processor = ActivityProcessor(registry, clock=lambda: FIXED_NOW, state_cache=100)
    store: dict[bytes, bytes] = {}
    records = _records()
    customer = records[0].key
    mine = [r for r in records if r.key == customer and r.topic == "transaction-add"]
    first = processor.process(mine[0].topic, mine[0].partition, mine[0].offset, mine[0].key, mine[0].value,
                              store.get)
    assert first.state is not None and first.state_key is not None and first.outcome is not None
    store[first.state_key] = first.state
    held = first.outcome.state
    real_apply = processor_module.apply

    def half_then_fail(state: Any, *args: Any, **kwargs: Any) -> Any:
        real_apply(state, *args, **kwargs)  # changes the cached state in place ...
        raise RuntimeError("boom")  # ... then fails

    monkeypatch.setattr(processor_module, "apply", half_then_fail)
    failed = processor.process(mine[1].topic, mine[1].partition, mine[1].offset, mine[1].key, mine[1].value,
                               store.get)
    assert failed.dead_letter is not None and failed.dead_letter.error_class == "engine_error"
    assert encode_state(held) == store[first.state_key]  # the earlier outcome's state is as stored
    monkeypatch.setattr(processor_module, "apply", real_apply)
    again = processor.process(mine[1].topic, mine[1].partition, mine[1].offset, mine[1].key, mine[1].value,
                              store.get)
    plain = ActivityProcessor(registry, clock=lambda: FIXED_NOW)
    expected = plain.process(mine[1].topic, mine[1].partition, mine[1].offset, mine[1].key, mine[1].value,
                             {first.state_key: first.state}.get)
    assert again.outputs == expected.outputs and again.state == expected.state


def test_a_stale_cache_entry_is_not_used() -> None:
    """The store holds other bytes than the cached state's (e.g. another worker wrote them): decode those."""
    registry = workload.load_registry()
    cached = ActivityProcessor(registry, clock=lambda: FIXED_NOW, state_cache=100)
    plain = ActivityProcessor(registry, clock=lambda: FIXED_NOW)
    records = [r for r in _records() if r.key == _records()[0].key]
    store: dict[bytes, bytes] = {}
    for r in records[:2]:
        processed = cached.process(r.topic, r.partition, r.offset, r.key, r.value, store.get)
        if processed.state is not None and processed.state_key is not None:
            store[processed.state_key] = processed.state
    key = next(iter(store))
    older = decode_state(store[key])
    older.recent_event_ids.clear()  # a different, valid stored state
    older.last_event_time = (older.last_event_time or FIXED_NOW) - timedelta(days=1)
    store[key] = encode_state(older)
    r = records[2]
    assert (cached.process(r.topic, r.partition, r.offset, r.key, r.value, store.get).outputs
            == plain.process(r.topic, r.partition, r.offset, r.key, r.value, store.get).outputs)


def test_apply_leaves_its_input_state_alone() -> None:
    """`apply` without `in_place` works on `copy_state`, which must share nothing the engine changes."""
    registry = workload.load_registry()
    program = registry.get("bench")
    assert program is not None
    states: dict[str, Any] = {}
    for record in workload.generate(800, 40, seed=51, days=200):
        activity = activity_adapter.validate_json(record.value or b"")
        before = states.get(activity.customer_id)
        encoded = None if before is None else orjson.dumps(state_to_dict(before))
        outcome = apply(before, activity, program)
        if before is not None:
            assert orjson.dumps(state_to_dict(before)) == encoded
            assert copy_state(before) == before == state_from_dict(orjson.loads(encoded or b""))
        states[activity.customer_id] = outcome.state


def test_settling_turns_bills_and_redemptions_back_into_their_rows(stored_states: list[bytes]) -> None:
    """A state kept as an object after it is stored (the processor's cache) holds its bills and redemptions as
    the rows just written, like a fresh decode: it is still the same state, encodes to the same bytes, and a
    later encode writes those rows again instead of re-encoding every bill the state ever read or made."""
    with_bills = [raw for raw in stored_states if len(orjson.loads(raw)["bills"]) > 1
                  and orjson.loads(raw)["redemptions"]]
    assert with_bills
    for raw in with_bills:
        state = decode_state(raw)
        number = next(iter(state.bills))
        state.bills[number].returned_amount += Decimal("1.00")  # read (decoded) and changed
        rid = next(iter(state.redemptions))
        assert isinstance(state.redemptions[rid], object)  # read: decoded
        expected = copy_state(state)
        settled = state_to_json(state, settle=True)
        assert settled == state_to_json(expected) != raw
        assert type(state.bills) is StoredRows and type(state.redemptions) is StoredRows
        assert all(type(v) is list for v in state.bills.peek_all().values())
        assert all(type(v) is list for v in state.redemptions.peek_all().values())
        assert state == expected
        assert state.bills[number].returned_amount == expected.bills[number].returned_amount
        assert state_to_json(state) == settled


def test_a_settled_cached_state_encodes_no_bill_it_did_not_touch() -> None:
    """Through the processor: with the cache, a customer's next activity re-encodes only the bills it touched
    (without settling, every bill made since the state was decoded was encoded again on every activity).
    A bill still held as its stored row is written back as that row; only decoded bills are encoded."""
    registry = workload.load_registry()
    processor = ActivityProcessor(registry, clock=lambda: FIXED_NOW, state_cache=100)
    store: dict[bytes, bytes] = {}
    records = _records()
    customer = max({r.key for r in records}, key=lambda k: sum(r.key == k for r in records))
    mine = [r for r in records if r.key == customer]
    plain = ActivityProcessor(registry, clock=lambda: FIXED_NOW)
    plain_store: dict[bytes, bytes] = {}
    purchases = 0
    for r in mine:
        processed = processor.process(r.topic, r.partition, r.offset, r.key, r.value, store.get)
        expected = plain.process(r.topic, r.partition, r.offset, r.key, r.value, plain_store.get)
        assert processed.outputs == expected.outputs and processed.state == expected.state
        if processed.state is not None and processed.state_key is not None:
            store[processed.state_key] = processed.state
            cached = processor._states[processed.state_key][1]
            assert type(cached.bills) is StoredRows
            decoded = [number for number, row in cached.bills.peek_all().items() if type(row) is not list]
            assert decoded == [], decoded  # the next activity re-encodes none of them
        if expected.state is not None and expected.state_key is not None:
            plain_store[expected.state_key] = expected.state
        if r.topic == "transaction-add" and processed.dead_letter is None:
            purchases += 1
    assert purchases > 3


def test_a_settled_encode_writes_the_lots_json_of_the_plain_encoding(stored_states: list[bytes]) -> None:
    """A settled encode (the processor's cache) writes each unchanged lot as the JSON it kept from an earlier
    settled encode: the same bytes as the plain encoding, on the first settled encode and on later ones."""
    for raw in stored_states[-40:]:
        state = decode_state(raw)
        assert state_to_json(state, settle=True) == raw  # the lots' JSON is made here
        assert all(lot.stored is not None and lot.stored.text is not None for lot in state.lots)
        assert state_to_json(state, settle=True) == raw  # and written from here
        assert state_to_json(state) == orjson.dumps(state_to_dict(state)) == raw
    empty = new_state("c1", "bench")
    assert state_to_json(empty, settle=True) == orjson.dumps(state_to_dict(empty))


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(Lot) if f.compare])
def test_a_changed_lot_field_is_written_afresh_by_a_settled_encode(stored_states: list[bytes], name: str) -> None:
    """A lot changed after its JSON was kept is written from its fields, not that JSON: in the first, a middle
    and the last lot; and a lot added or removed changes the list."""
    raw = next(r for r in reversed(stored_states) if len(orjson.loads(r)["lots"]) >= 3)
    for index in (0, 1, -1):
        state = decode_state(raw)
        state_to_json(state, settle=True)
        state_to_json(state, settle=True)  # every lot now carries its JSON
        lot = state.lots[index]
        value = CHANGES[name] if getattr(lot, name) != CHANGES[name] else not getattr(lot, name)  # bools
        setattr(lot, name, value)
        encoded = state_to_json(state, settle=True)
        plain = decode_state(raw)
        setattr(plain.lots[index], name, value)
        assert encoded == orjson.dumps(state_to_dict(plain)) != raw
        assert getattr(decode_state(encoded).lots[index], name) == value
        assert state_to_json(state, settle=True) == encoded  # the changed lot's new JSON is kept
    state = decode_state(raw)
    state_to_json(state, settle=True)
    added = dataclasses.replace(state.lots[0], lot_id="added", stored=None)
    state.lots.insert(1, added)
    del state.lots[-1]
    assert state_to_json(state, settle=True) == orjson.dumps(state_to_dict(copy_state(state)))


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(Lot) if f.compare])
def test_a_changed_lot_keeps_only_the_texts_of_its_unchanged_fields(name: str) -> None:
    """A changed lot whose row the codec wrote takes its unchanged date-times' and points' texts from that row:
    the same row as formatting the lot afresh; a field changed (even to an equal value) is formatted again."""
    kolkata = datetime(2024, 1, 1, 9, 30, tzinfo=UTC).astimezone(workload.ZONE)
    for settle in (False, True):
        state = new_state("c1", "bench")
        state.lots = [Lot("l1", Decimal("10.00"), Decimal("4.50"), False, kolkata, kolkata + timedelta(days=1),
                          kolkata + timedelta(days=30), "e", reminded=(7,), cap_keys=("cap:a",),
                          shortfall=Decimal("0.50"))]
        state_to_json(state, settle=settle)  # the lot's row is the codec's own
        lot = state.lots[0]
        for field_name, value in ((name, CHANGES[name]), ("remaining", Decimal("4.25"))):
            if field_name in ("earned_at", "available_at", "expires_at"):
                value = value.astimezone(workload.ZONE)
            setattr(lot, field_name, value)
            fresh = copy_state(state)
            for copied in fresh.lots:
                copied.stored = None
            assert state_to_json(state, settle=settle) == orjson.dumps(state_to_dict(fresh))
        for field_name in ("earned_at", "points"):  # an equal value in another object: its own text
            current = getattr(lot, field_name)
            setattr(lot, field_name, current.astimezone(UTC) if field_name == "earned_at" else Decimal("10.0"))
            encoded = state_to_json(state, settle=settle)
            assert (b"+00:00" in encoded) if field_name == "earned_at" else (b'"10.0"' in encoded)


def test_a_settled_encode_joins_the_sections_as_the_plain_encoding_writes_them(stored_states: list[bytes]) -> None:
    """A settled encode joins its sections itself (head, lots, counters, redemptions, bills, tail): the same
    bytes as `orjson.dumps(state_to_dict(...))` for empty and full sections, custom fields, parked activities,
    and bills and redemptions changed, added and removed between settled encodes; and bytes of their own."""
    empty = new_state("c1", "bench")
    assert state_to_json(empty, settle=True) == orjson.dumps(state_to_dict(copy_state(empty)))
    raw = next(r for r in reversed(stored_states) if len(orjson.loads(r)["bills"]) >= 3
               and orjson.loads(r)["redemptions"])
    state = decode_state(raw)
    assert state_to_json(state, settle=True) == raw
    state.custom_fields = {"a": Decimal("1.50"), "b": "x", "c": 3, "d": True}
    state.extended_fields = {"e": Decimal("2")}
    state.counters["cap:extra"] = Decimal("7.25")
    state.parked = [Parked(activity("PointsUnlock", "p1", "2024-02-01T10:00:00+05:30", bill_number="B1"),
                           SourceRef(topic="points-unlock", partition=1, offset=9)),
                    Parked(activity("RedemptionReversal", "p2", "2024-02-02T10:00:00+00:00", redemption_id="R1"),
                           None, True)]
    numbers = list(state.bills)
    state.bills[numbers[1]].returned_amount += Decimal("1.00")  # changed in the middle
    del state.bills[numbers[0]]  # the first removed
    state.bills["B-new"] = Bill("B-new", "e-new", datetime(2024, 3, 1, tzinfo=UTC), Decimal("10.00"))
    rid = next(iter(state.redemptions))
    del state.redemptions[rid]
    for _ in range(2):  # written from the kept texts the second time
        expected = orjson.dumps(state_to_dict(copy_state(state)))
        settled = state_to_json(state, settle=True)
        assert settled == expected
        assert bytes(memoryview(settled)) == settled and type(settled) is bytes
    state.bills = {}
    state.redemptions = {}
    state.lots = []
    state.recent_event_ids = {}
    state.counters = {}
    assert state_to_json(state, settle=True) == orjson.dumps(state_to_dict(copy_state(state)))
