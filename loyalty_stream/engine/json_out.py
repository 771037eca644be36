"""orjson's `default` for the output contracts (`events.codec.encode`), and that encoding itself.

In the engine package so that mypyc compiles it: orjson calls it for every Decimal and date-time of every
output, about 50 per record.
"""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from typing import Final

import orjson
from pydantic import BaseModel

from loyalty_stream.engine.times import IdentityMemo
from loyalty_stream.events.outputs import SourceRef

_DUMPS: Final = orjson.dumps
_FRAGMENT: Final = orjson.Fragment
_DECIMAL: Final = Decimal
_DATETIME: Final = datetime
_SOURCE_REF: Final = SourceRef
_MODELS: Final[set[type]] = set()
"""The output contract types `json_default` met (their instances written as their fields)."""
_JSON_TIMES: Final[IdentityMemo[orjson.Fragment]] = IdentityMemo()
"""`json_default`'s memo: the JSON of a date-time by identity."""
_UTC_Z: Final = orjson.OPT_UTC_Z
OUTPUT_OPTIONS: Final = orjson.OPT_UTC_Z | orjson.OPT_PASSTHROUGH_DATETIME
"""The orjson options of the outputs with `json_default`: date-times are handed to it (it writes what
`OPT_UTC_Z` alone would)."""


class _Recent:
    """The last few date-times `json_default` wrote and their JSON, and the last source reference: looked at by
    identity before `_JSON_TIMES`. An activity's outputs repeat a handful of date-times (its time, its lots'
    expiry and availability: three in four are among the last four), and an identity test is a few instructions
    where the memo's lookup (an `id` boxed, a dict probed, the int compared) costs about 500. Holds its objects,
    so an identity test never meets a reused address."""

    __slots__ = ("fragment0", "fragment1", "fragment2", "fragment3", "next", "source", "source_json", "time0",
                 "time1", "time2", "time3")

    def __init__(self) -> None:
        self.time0: object = None
        self.time1: object = None
        self.time2: object = None
        self.time3: object = None
        self.fragment0: object = None
        self.fragment1: object = None
        self.fragment2: object = None
        self.fragment3: object = None
        self.next = 0
        """The slot the next date-time missed takes (round robin)."""
        self.source: object = None
        self.source_json: object = None

    def time_json(self, value: datetime) -> object:
        """The JSON of `value` as orjson writes it under `OPT_UTC_Z`, as a fragment."""
        if value is self.time0:
            return self.fragment0
        if value is self.time1:
            return self.fragment1
        if value is self.time2:
            return self.fragment2
        if value is self.time3:
            return self.fragment3
        kept = _JSON_TIMES.get(value)
        if kept is None:
            kept = _JSON_TIMES.put(value, _FRAGMENT(_DUMPS(value, option=_UTC_Z)))
        slot = self.next
        if slot == 0:
            self.time0, self.fragment0 = value, kept
        elif slot == 1:
            self.time1, self.fragment1 = value, kept
        elif slot == 2:
            self.time2, self.fragment2 = value, kept
        else:
            self.time3, self.fragment3 = value, kept
        self.next = (slot + 1) & 3
        return kept

    def source_ref_json(self, value: SourceRef) -> object:
        """A source reference's JSON (its fields, all text and ints), as a fragment: every entry of an activity
        carries the same one, and fragment bytes are copied where a dict is walked (and `__dict__` looked up)."""
        if value is self.source:
            return self.source_json
        kept = _FRAGMENT(_DUMPS(value.__dict__, default=json_default, option=OUTPUT_OPTIONS))
        self.source, self.source_json = value, kept
        return kept


_RECENT: Final = _Recent()


def json_default(value: object) -> object:
    """orjson's `default` for the outputs (`events.codec.encode`, with `OUTPUT_OPTIONS`): a Decimal as its
    `str`, a nested contract (a ledger entry's `SourceRef`, a redemption's lots) as its fields, a date-time as
    the JSON orjson writes for it under `OPT_UTC_Z` (so the bytes are orjson's own), remembered by identity
    (`_Recent`, `_JSON_TIMES`): an activity's outputs share its date-times (its time, its lots' expiry and
    availability; 95 % hits), and a kept fragment costs less than orjson formatting the date-time again (it asks
    the zone for its offset).

    In the engine because the engine is compiled: orjson calls it for every Decimal and date-time of every output
    (about 50 per record); interpreted, each call cost twice as much."""
    kind = type(value)
    if kind is _DECIMAL:
        return str(value)
    if kind is _DATETIME:
        return _RECENT.time_json(value)  # type: ignore[arg-type]  # (its type tested just above)
    if kind is _SOURCE_REF:
        return _RECENT.source_ref_json(value)  # type: ignore[arg-type]
    if kind in _MODELS:
        return value.__dict__
    if isinstance(value, BaseModel):
        _MODELS.add(kind)
        return value.__dict__
    if isinstance(value, _DECIMAL):
        return str(value)
    if isinstance(value, (date, time)):  # a date, a time, a subclass: orjson's own JSON of it
        return _FRAGMENT(_DUMPS(value, option=_UTC_Z))
    raise TypeError(kind.__name__)


_JSON_DEFAULT: Final = json_default


def encode_contract(message: BaseModel) -> bytes:
    """`events.codec.encode(message)`, compiled: canonical JSON of an output, by orjson from the message's fields
    with `json_default`, or by pydantic's serializer for what orjson cannot write (see there)."""
    try:
        return _DUMPS(message.__dict__, default=_JSON_DEFAULT, option=OUTPUT_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return message.__pydantic_serializer__.to_json(message)
