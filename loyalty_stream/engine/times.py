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
from typing import Final, Generic, TypeVar

from pydantic_core import TzInfo

_BY_OFFSET: Final[dict[timedelta, tzinfo]] = {timedelta(0): UTC}
_SHARED: Final[set[int]] = {id(UTC)}
"""The ids of the shared zones (each held by `_BY_OFFSET` for good, so an id is never reused)."""


def _hash_keys_offsets() -> bool:
    """Whether a `TzInfo`'s hash stands for its offset here: equal for equal offsets, apart for the offsets of
    whole minutes (every real zone's). tests/unit/test_engine_fastpath_apply.py checks every offset in seconds;
    this guards a pydantic_core whose hash changed (by object, or coarser) from ever reaching `fixed`'s cache."""
    minutes = range(-24 * 60 + 1, 24 * 60)
    hashes = {hash(TzInfo(minute * 60)) for minute in minutes}
    return len(hashes) == len(minutes) and all(hash(TzInfo(s)) == hash(TzInfo(s)) for s in (0, 19800, -18000))


_PARSED: Final[type | None] = TzInfo if _hash_keys_offsets() else None
"""The zone pydantic gives every date-time it parses (a new object each time: identity tells nothing); None
when its hash cannot key `_BY_PARSED` (then parsed zones take the offset path)."""
_BY_PARSED: Final[dict[int, tzinfo]] = {}
"""Shared zones by the hash of a parsed date-time's `TzInfo`, which is a hash of its offset alone (whole seconds)
and differs for every offset a zone can have: asking a `TzInfo` for its offset (a call into pydantic returning a
new timedelta, hashed for `_BY_OFFSET`) costs several times its hash. Bounded like the other caches: a zone
whose hash were per object could not make it grow without end."""
_PARSED_LIMIT: Final = 4096
V = TypeVar("V")
_FRONT: Final = 1024
"""Slots of an `IdentityMemo`'s front (a power of two)."""
_FRONT_MASK: Final = _FRONT - 1
_EMPTY: Final = object()
"""What an empty front slot holds (no key is this object)."""
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
            if len(_BY_PARSED) >= _PARSED_LIMIT:
                _BY_PARSED.clear()
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


class IdentityMemo(Generic[V]):
    """Values derived from objects (texts of date-times, their JSON, facts of a zone), remembered by identity:
    deriving them costs more than most of what is done with them, and a customer's lots and an activity's
    outputs share a few objects. Keyed by identity, not value: equal date-times can carry other offsets or be
    other instants (`fold`). An entry holds its object, so its id is not reused while the entry lives.
    Bounded: cleared when full.

    A direct-mapped front (a slot per id's bits, holding the object and its value) answers most lookups: a dict
    lookup by id boxes the id and hashes it, several times the cost of the front's identity test. A slot holds
    its object too (so `is` there means this very object), and a dict hit refills the slot. It only ever holds
    entries of the dict (emptied with it), so what the memo keeps is bounded as before."""

    __slots__ = ("_keys", "_limit", "_slots", "_values")

    def __init__(self, limit: int = 4096) -> None:
        self._values: dict[int, tuple[object, V]] = {}
        self._limit = limit
        self._keys: list[object] = [_EMPTY] * _FRONT
        self._slots: list[V | None] = [None] * _FRONT

    def get(self, key: object) -> V | None:
        ident = id(key)
        slot = (ident >> 4) & _FRONT_MASK  # (objects are 16-byte aligned: the low bits tell nothing)
        if self._keys[slot] is key:
            return self._slots[slot]
        hit = self._values.get(ident)
        if hit is None:
            return None
        value = hit[1]
        self._keys[slot] = key
        self._slots[slot] = value
        return value

    def put(self, key: object, value: V) -> V:
        if len(self._values) >= self._limit:
            self._values.clear()
            self._keys = [_EMPTY] * _FRONT
            self._slots = [None] * _FRONT
        ident = id(key)
        self._values[ident] = (key, value)
        slot = (ident >> 4) & _FRONT_MASK
        self._keys[slot] = key
        self._slots[slot] = value
        return value


class TextMemo(IdentityMemo[str]):
    """Texts of date-time objects (`IdentityMemo`)."""
