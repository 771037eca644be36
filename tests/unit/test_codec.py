"""Decoding classifies every bad input into a dead-letter class with a reason naming the field."""

from __future__ import annotations

import orjson
import pytest

from loyalty_stream.events.activities import TransactionAdd
from loyalty_stream.events.codec import DecodeError, decode_activity, encode, text_or_base64

GOOD = {
    "type": "TransactionAdd", "event_id": "e1", "program_id": "default", "customer_id": "c1",
    "event_time": "2026-03-01T12:00:00+01:00",
    "payload": {"bill_number": "B1", "amount": "99.95",
                "line_items": [{"item_id": "1", "sku": "S", "amount": "99.95", "quantity": 1}],
                "tenders": [{"mode": "CASH", "amount": 99.95}], "channel": "instore",
                "custom_fields": {"store_size": 3}},
}


def test_good_transaction_decodes_exactly() -> None:
    activity = decode_activity(orjson.dumps(GOOD))
    assert isinstance(activity, TransactionAdd)
    assert str(activity.payload.amount) == "99.95"
    assert str(activity.payload.tenders[0].amount) == "99.95"  # a JSON number still decodes exactly
    assert activity.event_time.utcoffset() is not None


def _error(raw: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode_activity(raw)
    return caught.value


def test_not_json() -> None:
    assert _error(b"\x00\xff garbage").error_class == "not_json"
    assert _error(None).error_class == "not_json"  # type: ignore[arg-type]


def test_unknown_and_missing_type() -> None:
    error = _error(orjson.dumps({**GOOD, "type": "Teleport"}))
    assert error.error_class == "unknown_type" and "Teleport" in error.reason
    missing = {k: v for k, v in GOOD.items() if k != "type"}
    assert _error(orjson.dumps(missing)).error_class == "unknown_type"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"payload": {**GOOD["payload"], "amount": "-1"}}, "payload.amount"),  # type: ignore[dict-item]
        ({"event_time": "2026-03-01T12:00:00"}, "event_time"),
        ({"customer_id": ""}, "customer_id"),
        ({"surprise": 1}, "surprise"),
        ({"payload": {**GOOD["payload"], "line_items": [{"item_id": "1", "sku": "S", "amount": 1},  # type: ignore[dict-item]
                                                          {"item_id": "1", "sku": "T", "amount": 2}]}}, "unique"),
    ],
)
def test_schema_violations_name_the_field(change: dict[str, object], field: str) -> None:
    error = _error(orjson.dumps({**GOOD, **change}))
    assert error.error_class == "schema_violation"
    assert field in error.reason


def test_outputs_encode_decimals_as_strings() -> None:
    activity = decode_activity(orjson.dumps(GOOD))
    assert b'"amount":"99.95"' in encode(activity)


def test_dead_letter_keeps_original_bytes() -> None:
    assert text_or_base64(b"hello") == ("hello", "utf-8")
    assert text_or_base64(b"\xff\x00") == ("/wA=", "base64")


def test_right_sized_keeps_the_bytes_and_drops_orjsons_spare_capacity() -> None:
    """Stored states and a replay's ledger are kept for long: each must hold its own size, not orjson's 4 KiB
    allocation (orjson 3.12 never shrinks its output)."""
    import tracemalloc

    from loyalty_stream.events.codec import right_sized

    message = {"entry_id": "le-0123456789abcdef0123", "amount": "12.50", "rule": "base earn"}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [right_sized(orjson.dumps(message)) for _ in range(100)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert all(k == orjson.dumps(message) for k in kept)
    assert held < 100 * 150  # 72 bytes of JSON + the bytes header each, + the list
