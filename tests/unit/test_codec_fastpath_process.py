"""The output and state codec's fast paths give exactly what the plain computations give: `json_default`
(compiled, date-times remembered by identity) against orjson's own writing, `iso_text` against `isoformat`."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from loyalty_stream.engine.json_out import json_default
from loyalty_stream.engine.state import iso_text
from loyalty_stream.events.activities import Registration, RegistrationPayload
from loyalty_stream.events.codec import encode
from loyalty_stream.events.outputs import Bucket, LedgerEntry, LedgerKind, SourceRef

ZONES = [UTC, timezone(timedelta(0)), timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8)),
         timezone(timedelta(hours=5, minutes=30, seconds=15)), timezone(timedelta(seconds=1, microseconds=5))]


def plain_fields(value: Any) -> Any:
    """The codec's `default` as it was first written (date-times left to orjson)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, BaseModel):
        return value.__dict__
    raise TypeError(type(value).__name__)


def plain(message: BaseModel) -> bytes:
    return orjson.dumps(message.__dict__, default=plain_fields, option=orjson.OPT_UTC_Z)


def entry(at: datetime, expires_at: datetime | None) -> LedgerEntry:
    return LedgerEntry(entry_id="le-1", seq=3, customer_id="c1", program_id="p1", program_version=2,
                       kind=LedgerKind.EARN, bucket=Bucket.CURRENT, amount=Decimal("12.50"),
                       balance_after=Decimal("100"), promised_after=Decimal("0.00"), source_event_id="e1",
                       source_type="TransactionAdd", source=SourceRef(topic="t", partition=1, offset=7),
                       expires_at=expires_at, available_at=at, occurred_at=at)


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("microsecond", [0, 1, 500000])
def test_encode_matches_orjsons_own_date_times(zone: timezone, microsecond: int) -> None:
    at = datetime(2024, 3, 1, 12, 30, 5, microsecond, tzinfo=zone)
    message = entry(at, datetime(999, 12, 31, tzinfo=zone))
    first = encode(message)
    assert first == plain(message)
    assert encode(message) == first  # again: from the remembered date-time JSON


def test_remembered_by_identity_not_value() -> None:
    """Equal date-times of other offsets keep their own text (a memo by value would give the first's)."""
    utc = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    india = utc.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert utc == india
    assert encode(entry(utc, None)) == plain(entry(utc, None))
    assert encode(entry(india, None)) == plain(entry(india, None))
    assert b'"2024-03-01T17:30:00+05:30"' in encode(entry(india, None))


def test_dates_and_subclasses_as_orjson_writes_them() -> None:
    activity = Registration(event_id="e", program_id="p", customer_id="c",
                            event_time=datetime(2024, 1, 2, tzinfo=UTC),
                            payload=RegistrationPayload(membership_end=date(2025, 6, 30)))
    assert encode(activity) == plain(activity)

    class Stamp(datetime):
        pass

    stamp = Stamp(2024, 1, 2, 3, 4, 5, tzinfo=UTC)  # orjson writes no subclass: both refuse it (pydantic then)
    with pytest.raises(TypeError):
        orjson.dumps({"at": stamp}, default=plain_fields, option=orjson.OPT_UTC_Z)
    with pytest.raises(TypeError):
        orjson.dumps({"at": stamp}, default=json_default, option=orjson.OPT_UTC_Z | orjson.OPT_PASSTHROUGH_DATETIME)


def test_json_default_refuses_what_orjson_cannot_write() -> None:
    with pytest.raises(TypeError):
        json_default(object())


@pytest.mark.parametrize("zone", [*ZONES, None])
@pytest.mark.parametrize("year", [1, 999, 2024, 9999])
def test_iso_matches_isoformat(zone: timezone | None, year: int) -> None:
    for microsecond in (0, 1, 999999):
        at = datetime(year, 2, 3, 4, 5, 6, microsecond, tzinfo=zone)
        assert iso_text(at) == at.isoformat()
        assert iso_text(at) == at.isoformat()  # remembered
