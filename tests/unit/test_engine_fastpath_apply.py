"""Fast paths of `core.apply`'s fixed per-activity cost give exactly what the plain computation gives.

`times.fixed` finds the shared zone of a date-time pydantic parsed by the hash of its `TzInfo` and rebuilds it
with `datetime.combine`; the balance change's id is hashed from the event id without a parts tuple; `apply`
reads the source's offset once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pytest
from pydantic import TypeAdapter
from pydantic_core import TzInfo

from loyalty_stream.engine import times
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.ids import derive_id
from loyalty_stream.engine.times import fixed
from loyalty_stream.events.outputs import SourceRef

from .conftest import activity
from .test_redeem import make_program

_PARSE = TypeAdapter(datetime)
OFFSETS = ["Z", "+00:00", "+05:30", "-03:00", "+14:00", "-11:00", "+05:45", "-00:30", "+23:59", "-23:59"]


def plain_fixed(at: datetime) -> datetime:
    """What `fixed` stands for: the same wall time and fold under a fixed-offset zone of `at`'s offset."""
    offset = at.utcoffset()
    assert offset is not None
    return at.replace(tzinfo=UTC if not offset else timezone(offset))


def _same(got: datetime, expected: datetime) -> None:
    assert type(got) is type(expected)
    assert got == expected and got.utcoffset() == expected.utcoffset()
    assert (got.isoformat(), got.fold, str(got)) == (expected.isoformat(), expected.fold, str(expected))
    assert type(got.tzinfo) is timezone


def test_every_offset_has_its_own_tzinfo_hash() -> None:
    """What keying the shared zones by a parsed zone's hash relies on: `TzInfo` holds whole seconds of offset
    (less than a day either way) and no two of them hash alike."""
    hashes = {hash(TzInfo(seconds)) for seconds in range(-86_399, 86_400)}
    assert len(hashes) == 2 * 86_399 + 1


def test_the_parsed_zone_cache_is_on_and_bounded() -> None:
    """The import-time guard accepts this pydantic_core (else `fixed` takes the slower offset path), and the
    cache never holds more than its bound however many zones pass."""
    assert times._hash_keys_offsets()
    assert times._PARSED is TzInfo
    for seconds in range(3 * times._PARSED_LIMIT):  # as many distinct zones (seconds of offset)
        parsed = datetime(2024, 5, 1, 12, tzinfo=TzInfo(seconds))
        assert fixed(parsed).utcoffset() == timedelta(seconds=seconds)
        assert len(times._BY_PARSED) <= times._PARSED_LIMIT
    assert 0 < len(times._BY_PARSED) <= times._PARSED_LIMIT


@pytest.mark.parametrize("offset", OFFSETS)
def test_fixed_of_parsed_times_matches_the_plain_zone(offset: str) -> None:
    for text in (f"2024-10-01T10:00:00{offset}", f"2024-03-31T01:59:59.123456{offset}", f"1999-12-31T23:30{offset}"):
        for _ in range(2):  # the first finds the zone, the second takes it from the cache
            at = _PARSE.validate_python(text)
            assert type(at.tzinfo) is TzInfo
            got = fixed(at)
            _same(got, plain_fixed(at))
            assert fixed(got) is got
            assert got.tzinfo is fixed(datetime.fromisoformat(text)).tzinfo  # one shared zone per offset


def test_fixed_keeps_fold_and_subclasses() -> None:
    class Stamp(datetime):
        pass

    for offset in OFFSETS:
        at = _PARSE.validate_python(f"2024-11-03T01:30:00{offset}").replace(fold=1)
        _same(fixed(at), plain_fixed(at))
        plain = datetime.fromisoformat(f"2024-11-03T01:30:00{offset}").replace(fold=1)
        _same(fixed(plain), plain_fixed(plain))
        sub = Stamp(2024, 11, 3, 1, 30, tzinfo=plain.tzinfo)
        _same(fixed(sub), plain_fixed(sub))


def test_fixed_of_other_zones_matches_the_plain_zone() -> None:
    class Odd(tzinfo):
        def utcoffset(self, dt: datetime | None) -> timedelta:
            return timedelta(hours=-7, minutes=-15)

        def dst(self, dt: datetime | None) -> None:
            return None

        def tzname(self, dt: datetime | None) -> str:
            return "odd"

    for zone in (timezone(timedelta(hours=9)), UTC, Odd(), timezone(timedelta(hours=-7, minutes=-15))):
        at = datetime(2024, 6, 1, 12, 34, 56, 789, tzinfo=zone)
        _same(fixed(at), plain_fixed(at))
    assert fixed(datetime(2024, 6, 1, tzinfo=Odd())).tzinfo is fixed(
        _PARSE.validate_python("2024-06-01T00:00:00-07:15")).tzinfo
    assert all(type(zone) is timezone for zone in times._BY_PARSED.values())


def test_balance_change_and_offsets() -> None:
    """The balance change's id is `derive_id("bc", event_id)`; the source's offset is recorded, and a record at
    or below it is a duplicate."""
    program = make_program()
    source = SourceRef(topic="activities", partition=3, offset=41)
    event = activity("TransactionAdd", "t1", "2024-10-01T10:00:00+05:30", bill_number="B1", amount="120.50")
    outcome = apply(None, event, program, source)
    assert outcome.balance_change is not None
    assert outcome.balance_change.change_id == derive_id("bc", "t1")
    assert outcome.state.offsets == {"activities:3": 41}
    again = activity("TransactionAdd", "t2", "2024-10-01T11:00:00+05:30", bill_number="B2", amount="5")
    assert apply(outcome.state, again, program, source).duplicate
    later = apply(outcome.state, again, program, source.model_copy(update={"offset": 42}))
    assert not later.duplicate and later.state.offsets == {"activities:3": 42}
    seen = apply(later.state, again, program, source.model_copy(update={"offset": 43}))
    assert seen.duplicate and seen.state.offsets == {"activities:3": 43}
