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

_BY_OFFSET: Final[dict[timedelta, tzinfo]] = {timedelta(0): UTC}
_SHARED: Final[set[int]] = {id(UTC)}
"""The ids of the shared zones (each held by `_BY_OFFSET` for good, so an id is never reused)."""


def fixed(at: datetime) -> datetime:
    """`at` with the shared fixed-offset time zone of its UTC offset (the same instant and offset)."""
    if id(at.tzinfo) in _SHARED:
        return at  # already there: its offset's shared zone (asking for the offset costs far more)
    offset = at.utcoffset()
    assert offset is not None, "the engine only handles aware date-times"
    zone = _BY_OFFSET.get(offset)
    if zone is None:
        zone = _BY_OFFSET[offset] = timezone(offset)
        _SHARED.add(id(zone))
    if at.tzinfo is zone:
        return at
    if at.fold or type(at) is not datetime:
        return at.replace(tzinfo=zone)
    # The same wall time under `zone` (it has `at`'s offset): what `replace` gives, in half the time. Only
    # `fold` could differ (0 here), and a subclass would not survive, hence those two cases above.
    return at.astimezone(zone)


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
