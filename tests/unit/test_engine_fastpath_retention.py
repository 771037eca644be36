"""`retention`'s fast paths give exactly what the plain code gave: a window's horizon tested against stored rows'
texts as text where their shape and offset allow it (`_Horizon.reached`), and stored times read through the
codec's memo of parsed date-times (`time_of`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_stream.engine import retention
from loyalty_stream.engine.state import Bill, Redemption
from loyalty_stream.engine.times import fixed

OFFSETS = [timedelta(0), timedelta(hours=5, minutes=30), timedelta(hours=-3), timedelta(hours=14),
           timedelta(hours=-9, minutes=-30), timedelta(hours=5, minutes=53, seconds=28)]


def plain_reached(row_or_item: Any, at: datetime, attribute: str) -> bool:
    """What `prune` tested: the parsed time (a new zone per text) compared with the horizon."""
    if type(row_or_item) is list:
        return datetime.fromisoformat(row_or_item[1]) <= at
    value: datetime = getattr(row_or_item, attribute)
    return value <= at


def _texts(at: datetime) -> list[str]:
    """`at`'s instant and its neighbours (a microsecond, a second, a day either way) in every offset, as the codec
    writes them, and in other spellings `fromisoformat` reads (which the fast path must leave to it)."""
    texts: list[str] = []
    for step in (timedelta(0), timedelta(microseconds=1), timedelta(seconds=1), timedelta(days=1),
                 timedelta(microseconds=-1), timedelta(seconds=-1), timedelta(days=-1),
                 timedelta(hours=-5, minutes=-30)):
        moved = at + step
        for offset in OFFSETS:
            local = moved.astimezone(timezone(offset))
            texts.append(local.isoformat())
            texts.append(local.replace(microsecond=0).isoformat())
            texts.append(local.isoformat(sep=" "))
            texts.append(local.isoformat().replace(".", ","))
            texts.append(local.isoformat(timespec="milliseconds"))
            texts.append(local.isoformat(timespec="minutes"))
        utc = moved.astimezone(UTC)
        texts.append(utc.isoformat().replace("+00:00", "Z"))
    return texts


def _assert_reached_as_plain(at: datetime) -> None:
    horizon = retention._Horizon(fixed(at))
    for text in _texts(at):
        row = ["e1", text, "10", "0", False, []]
        assert horizon.reached(row, 1, "event_time") is plain_reached(row, at, "event_time"), (text, at)
        parsed = datetime.fromisoformat(text)
        bill = Bill("B1", "e1", parsed, Decimal(10))
        assert horizon.reached(bill, 1, "event_time") is plain_reached(bill, at, "event_time")
        redemption = Redemption("R1", "e1", parsed, Decimal(5), None)
        assert horizon.reached(redemption, 1, "at") is plain_reached(redemption, at, "at")


def test_reached_is_the_parsed_comparison_at_the_edges() -> None:
    """Equal instants in other offsets, a microsecond or a second apart, with and without a fraction (an absent
    one sorts before a present one), other spellings of the same instant, in the horizon's and other offsets."""
    for offset in OFFSETS:
        for base in (datetime(2026, 1, 1, 0, 0, 0), datetime(2025, 12, 31, 23, 59, 59, 999999),
                     datetime(2024, 2, 29, 12, 30, 15, 500000), datetime(2026, 3, 10, 18, 29, 59)):
            _assert_reached_as_plain(base.replace(tzinfo=timezone(offset)))


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2100, 1, 1)), st.sampled_from(OFFSETS),
       st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2100, 1, 1)), st.sampled_from(OFFSETS))
def test_reached_is_the_parsed_comparison(wall: datetime, offset: timedelta, other: datetime,
                                          other_offset: timedelta) -> None:
    at = wall.replace(tzinfo=timezone(offset))
    horizon = retention._Horizon(fixed(at))
    for text in (other.replace(tzinfo=timezone(other_offset)).isoformat(),
                 other.replace(tzinfo=timezone(offset)).isoformat(), *_texts(at)[:12]):
        row = ["e1", text, "10", "0", False, []]
        assert horizon.reached(row, 1, "event_time") is plain_reached(row, at, "event_time"), (text, at)


def test_time_of_is_the_parsed_time() -> None:
    """The same instant and offset (hence text) as `fromisoformat` gives, with the offset's shared zone."""
    for text in _texts(datetime(2026, 1, 1, 10, tzinfo=timezone(timedelta(hours=5, minutes=30)))):
        parsed = datetime.fromisoformat(text)
        got = retention.time_of(["e1", text], 1, "event_time")
        assert got == parsed and got.utcoffset() == parsed.utcoffset() and got.isoformat() == parsed.isoformat()
        assert got.tzinfo is fixed(parsed).tzinfo
