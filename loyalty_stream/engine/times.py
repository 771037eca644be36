"""One shared time-zone object per UTC offset, so that comparing the engine's date-times stays cheap.

Python compares two aware date-times quickly when they hold the very same tzinfo object, and asks both for
their UTC offset otherwise (ten times slower). A customer's lots are compared with each other and with the
activity's time all the time (due transitions, spending order), so the date-times the engine computes and
decodes carry a fixed-offset `timezone` shared per offset (`fixed`): the same instant and the same offset as
the zone-aware value, hence the same text in every output, and the same form the stored state always had
(the codec writes offsets, not zones).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Final

from pydantic_core import TzInfo

_BY_OFFSET: Final[dict[timedelta, tzinfo]] = {timedelta(0): UTC}
_SHARED: Final[set[int]] = {id(UTC)}
"""The ids of the shared zones (each held by `_BY_OFFSET` for good, so an id is never reused)."""
_PARSED: Final = TzInfo
"""The zone pydantic gives every date-time it parses (a new object each time: identity tells nothing)."""
_BY_PARSED: Final[dict[int, tzinfo]] = {}
"""Shared zones by the hash of a parsed date-time's `TzInfo`, which is a hash of its offset alone (whole seconds)
and differs for every offset a zone can have (tests/unit/test_engine_fastpath_apply.py checks all of them):
asking a `TzInfo` for its offset (a call into pydantic returning a new timedelta, hashed for `_BY_OFFSET`) costs
several times its hash."""
_combine: Final = datetime.combine
_DATETIME: Final = datetime
"""`datetime` as a C global (by its name, a module-dict lookup per call)."""


def fixed(at: datetime) -> datetime:
    """`at` with the shared fixed-offset time zone of its UTC offset (the same instant and offset)."""
    given = at.tzinfo
    if type(given) is _PARSED:  # (tested first: the activity's time, never a shared zone)
        key = hash(given)
        zone = _BY_PARSED.get(key)
        if zone is None:
            zone = _BY_PARSED[key] = _shared(at)
    else:
        if id(given) in _SHARED:
            return at  # already there: its offset's shared zone (asking for the offset costs far more)
        zone = _shared(at)
        if given is zone:
            return at
    if type(at) is not _DATETIME:
        return at.replace(tzinfo=zone)  # (a subclass would not survive `combine`)
    # The same wall time and `fold` under `zone` (it has `at`'s offset): what `replace` gives, in a fifth of the
    # time (`replace` parses its keyword), and half of `astimezone`'s (which asks `at` for its offset again).
    return _combine(at, at.time(), zone)


def _shared(at: datetime) -> tzinfo:
    """The shared zone of `at`'s UTC offset."""
    offset = at.utcoffset()
    assert offset is not None, "the engine only handles aware date-times"
    zone = _BY_OFFSET.get(offset)
    if zone is None:
        zone = _BY_OFFSET[offset] = timezone(offset)
        _SHARED.add(id(zone))
    return zone


class TextMemo:
    """Texts of date-time objects, remembered by identity: formatting a date-time costs more than most of what
    is done with the text, and a customer's lots share a few objects. Keyed by identity, not value: equal
    date-times can carry other offsets or be other instants (`fold`). An entry holds its object, so its id is
    not reused while the entry lives. Bounded: cleared when full."""

    __slots__ = ("_limit", "_texts")

    def __init__(self, limit: int = 4096) -> None:
        self._texts: dict[int, tuple[datetime, str]] = {}
        self._limit = limit

    def get(self, at: datetime) -> str | None:
        hit = self._texts.get(id(at))
        return None if hit is None else hit[1]

    def put(self, at: datetime, text: str) -> str:
        if len(self._texts) >= self._limit:
            self._texts.clear()
        self._texts[id(at)] = (at, text)
        return text
