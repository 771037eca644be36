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
_DECIMAL_SLOTS: Final = 256
"""Slots of `json_default`'s Decimal front (a power of two)."""
_DECIMAL_MASK: Final = _DECIMAL_SLOTS - 1
_DECIMAL_KEYS: Final[list[object]] = [None] * _DECIMAL_SLOTS
"""The Decimal each slot last wrote (held, so its id is not reused while its text is kept)."""
_DECIMAL_TEXTS: Final[list[str]] = [""] * _DECIMAL_SLOTS
"""Its `str`, what orjson writes for it."""
_UTC_Z: Final = orjson.OPT_UTC_Z
OUTPUT_OPTIONS: Final = orjson.OPT_UTC_Z | orjson.OPT_PASSTHROUGH_DATETIME
"""The orjson options of the outputs with `json_default`: date-times are handed to it (it writes what
`OPT_UTC_Z` alone would)."""
_OPTIONS: Final[int | None] = OUTPUT_OPTIONS
"""`OUTPUT_OPTIONS` as an object: mypyc keeps an `int` Final unboxed, and boxed a new int for every call."""


class _LastSource:
    """The last source reference `json_default` wrote, and its JSON as a fragment: every entry of an activity
    carries the same one, and a fragment's bytes are copied where a dict is walked (and `__dict__` looked up).
    Holds its object, so the identity test never meets a reused address."""

    __slots__ = ("json", "source")

    def __init__(self) -> None:
        self.source: object = None
        self.json: object = None

    def source_ref_json(self, value: SourceRef) -> object:
        if value is self.source:
            return self.json
        kept = _FRAGMENT(_DUMPS(value.__dict__, _JSON_DEFAULT, _OPTIONS))
        self.source, self.json = value, kept
        return kept


_LAST_SOURCE: Final = _LastSource()


def json_default(value: object) -> object:
    """orjson's `default` for the outputs (`events.codec.encode`, with `OUTPUT_OPTIONS`): a Decimal as its
    `str` (remembered by identity in a small front), a nested contract (a ledger entry's `SourceRef`, a
    redemption's lots) as its fields, a date-time as the JSON orjson writes for it under `OPT_UTC_Z` (so the
    bytes are orjson's own), remembered by identity (`_JSON_TIMES`): an activity's outputs share its date-times
    (its time, its lots' expiry and availability; 95 % hits), and a kept fragment costs less than orjson
    formatting the date-time again (it asks the zone for its offset).

    In the engine because the engine is compiled: orjson calls it for every Decimal and date-time of every output
    (about 50 per record); interpreted, each call cost twice as much."""
    kind = type(value)
    if kind is _DECIMAL:
        # A direct-mapped front by identity: a customer's balances (and shared constants such as a zero) are
        # written by several of an activity's outputs, so about 3 Decimals in 10 are an object written shortly
        # before, and `str` costs several times the test. Not by value: a fresh Decimal's hash costs more than its
        # `str`, and equal values can have other texts (`1.0`, `1`).
        slot = (id(value) >> 4) & _DECIMAL_MASK  # (objects are 16-byte aligned: the low bits tell nothing)
        if _DECIMAL_KEYS[slot] is value:
            return _DECIMAL_TEXTS[slot]
        text = str(value)
        _DECIMAL_KEYS[slot] = value
        _DECIMAL_TEXTS[slot] = text
        return text
    if kind is _DATETIME:
        kept = _JSON_TIMES.get(value)
        if kept is not None:
            return kept
        return _JSON_TIMES.put(value, _FRAGMENT(_DUMPS(value, option=_UTC_Z)))
    if kind is _SOURCE_REF:
        return _LAST_SOURCE.source_ref_json(value)  # type: ignore[arg-type]  # (its type tested just above)
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
    """Canonical JSON of an output or activity (`events.codec.encode`, whose docstring says what it writes): by
    orjson from the message's fields with `json_default`, or by pydantic's serializer for what orjson cannot
    write. Here so that the engine's own encode of its outputs (`effects.encode_outputs`) is compiled."""
    try:
        return _DUMPS(message.__dict__, _JSON_DEFAULT, _OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return message.__pydantic_serializer__.to_json(message)
