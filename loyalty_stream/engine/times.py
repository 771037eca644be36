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

_BY_OFFSET: dict[timedelta, tzinfo] = {timedelta(0): UTC}


def fixed(at: datetime) -> datetime:
    """`at` with the shared fixed-offset time zone of its UTC offset (the same instant and offset)."""
    offset = at.utcoffset()
    assert offset is not None, "the engine only handles aware date-times"
    zone = _BY_OFFSET.get(offset)
    if zone is None:
        zone = _BY_OFFSET[offset] = timezone(offset)
    return at if at.tzinfo is zone else at.replace(tzinfo=zone)
