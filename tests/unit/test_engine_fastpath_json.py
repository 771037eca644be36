"""`engine.json_out`'s fast paths: `json_default`'s texts of Decimals (each its own `str`, never another equal
value's: its front is by identity) and what `encode_contract` writes with them (positional `dumps` arguments),
byte for byte pydantic's JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orjson

from loyalty_stream.engine import json_out
from loyalty_stream.engine.json_out import OUTPUT_OPTIONS, encode_contract, json_default
from loyalty_stream.events.outputs import BalanceChange, Bucket, LedgerEntry, LedgerKind, SourceRef


def test_equal_decimals_keep_their_own_text() -> None:
    # Equal and hash-equal, other texts: a front by value would answer the first one's text for the others.
    values = [Decimal("1"), Decimal("1.0"), Decimal("1.00"), Decimal("1E+1"), Decimal("10"), Decimal("-0"),
              Decimal("0"), Decimal("0.00")]
    for _ in range(3):
        for value in values:
            assert json_default(value) == str(value)


def test_fresh_decimals_every_time() -> None:
    # Many short-lived Decimals (addresses reused once freed): each written as its own text.
    for number in range(5000):
        value = Decimal(number) / 100
        assert json_default(value) == str(value)
        assert json_default(Decimal(f"{number}.0")) == f"{number}.0"


def test_a_repeated_decimal_is_answered_by_the_front() -> None:
    value = Decimal("123.45")
    first = json_default(value)
    assert first == "123.45"
    assert json_default(value) is first  # (the kept text: no `str` again)
    assert any(kept is value for kept in json_out._DECIMAL_KEYS)


def test_a_decimal_subclass_is_its_str() -> None:
    class Points(Decimal):
        def __str__(self) -> str:
            return "points"

    assert json_default(Points("2.50")) == "points"


def _entry(amount: Decimal, after: Decimal, at: datetime) -> LedgerEntry:
    return LedgerEntry(entry_id="e-1", seq=3, customer_id="c-1", program_id="p", program_version=1,
                       kind=LedgerKind.EARN, bucket=Bucket.CURRENT, amount=amount, balance_after=after,
                       promised_after=Decimal("0"), source_event_id="ev-1", source_type="Transaction",
                       source=SourceRef(topic="t", partition=0, offset=7), occurred_at=at,
                       expires_at=at + timedelta(days=30))


def test_encode_contract_is_pydantics_json() -> None:
    zone = timezone(timedelta(hours=5, minutes=30))
    shared = Decimal("20.00")
    messages = [
        _entry(shared, shared, datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        _entry(Decimal("20"), Decimal("20.0"), datetime(2026, 3, 1, 12, 30, 0, 5, tzinfo=zone)),
        _entry(shared, Decimal("-0"), datetime(2026, 3, 2, tzinfo=UTC)),
        BalanceChange(change_id="b", customer_id="c-1", program_id="p", seq=3, current=shared,
                      promised=Decimal("0"), lifetime_earned=Decimal("1E+3"), redeemed=Decimal("0.00"),
                      expired=shared, returned=Decimal("0"), delta_current=Decimal("20"),
                      delta_promised=Decimal("0"), tier=None, cause_event_id="ev-1", cause_type="Transaction",
                      occurred_at=datetime(2026, 3, 1, tzinfo=UTC)),
    ]
    for _ in range(2):
        for message in messages:
            assert encode_contract(message) == message.__pydantic_serializer__.to_json(message)
            assert orjson.dumps(message.__dict__, default=json_default, option=OUTPUT_OPTIONS) == \
                message.__pydantic_serializer__.to_json(message)


def test_the_options_object_is_output_options() -> None:
    # Passed positionally to `orjson.dumps` (default, then option): the same options as by keyword.
    assert json_out._OPTIONS == OUTPUT_OPTIONS == orjson.OPT_UTC_Z | orjson.OPT_PASSTHROUGH_DATETIME
    entry = _entry(Decimal("5.00"), Decimal("5.00"), datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(0))))
    assert encode_contract(entry) == orjson.dumps(entry.__dict__, default=json_default, option=OUTPUT_OPTIONS)
