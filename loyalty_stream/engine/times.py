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
