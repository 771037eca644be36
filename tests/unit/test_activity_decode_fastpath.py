"""The activity decode's plain-text fast path (`validate_activity_json`) against the models' own validators.

The oracle is `activity_adapter`, which is built from the (unchanged) models' validators and is what the decode
called before. For every input both give the same outcome: the same model values (types, decimal exponents,
time zones and fields set included), or the same errors. The fast validator alone must never accept an input
the models reject, nor decode one to other values.
"""

from __future__ import annotations

import copy
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from bench import workload
from loyalty_stream.events.activities import _plain_text_activity, activity_adapter, validate_activity_json
from loyalty_stream.events.codec import DecodeError, decode_activity

ENVELOPE = {"event_id": "e1", "program_id": "p1", "customer_id": "c1", "event_time": "2026-03-01T12:00:00+01:00"}
PURCHASE = {
    "type": "TransactionAdd", **ENVELOPE,
    "payload": {"bill_number": "B1", "amount": "99.95",
                "line_items": [{"item_id": "L1", "sku": "S1", "amount": "40.00", "quantity": 2, "category": "food"},
                               {"item_id": "L2", "sku": "S2", "amount": "59.95", "custom_fields": {"litres": 6}}],
                "tenders": [{"mode": "CASH", "amount": "99.95"}], "channel": "instore", "store": "S9"},
}
REDEMPTION = {"type": "PointsRedemption", **ENVELOPE, "payload": {"points": "150", "bill_number": "B1"}}
ADJUSTMENT = {"type": "ManualAdjustment", **ENVELOPE,
              "payload": {"direction": "add", "points": "10.5", "reason": "goodwill", "operator_id": "op"}}
RETURN = {"type": "TransactionReturn", **ENVELOPE,
          "payload": {"bill_number": "B1", "amount": "10", "line_items": [{"item_id": "L1", "amount": "5.5"}]}}
ENGAGEMENT = {"type": "Engagement", **ENVELOPE, "payload": {"event_name": "page_view", "count": 2}}
REGISTRATION = {"type": "Registration", **ENVELOPE,
                "payload": {"custom_fields": {"age": 31, "ratio": "1.50", "vip": True}, "membership_end": "2027-01-01"}}

#: Every place a Money or Points value sits: (message, path to the value).
DECIMAL_PLACES: list[tuple[dict[str, Any], tuple[str | int, ...]]] = [
    (PURCHASE, ("payload", "amount")),
    (PURCHASE, ("payload", "line_items", 1, "amount")),
    (PURCHASE, ("payload", "tenders", 0, "amount")),
    (REDEMPTION, ("payload", "points")),
    (ADJUSTMENT, ("payload", "points")),
    (RETURN, ("payload", "amount")),
    (RETURN, ("payload", "line_items", 0, "amount")),
]

DECIMAL_TEXTS = [
    "0", "-0", "0.0", "00", "-0.00", ".5", "5.", ".", "", " ", "1.5", " 1.5", "1.5 ", "\t2\n", "+1", "-1", "-0.01",
    "1e3", "1E3", "1e-3", "1E+30", "1e28", "0e5", "1.e2", "NaN", "nan", "-NaN", "sNaN", "Infinity", "-Infinity",
    "inf", "Inf", "1_000", "1_0.5", "1,5", "1.2.3", "..1", "0x10", "\u0661\u0662", "\uff11\uff12.\uff15",
    "1" * 27, "1" * 28, "1" * 29, "9" * 28, "9" * 28 + ".0", "1" * 27 + ".5", "1" * 26 + ".5", "1" * 28 + ".",
    "0." + "0" * 26 + "1", "0." + "0" * 27 + "1", "0." + "0" * 28 + "1", "0." + "1" * 27, "0." + "1" * 28,
    "0.1" + "0" * 29 + "1", "0" * 30 + "1.5", "0" * 27 + "1", "1" + "0" * 30, "1" * 14 + "." + "1" * 14,
    "1." + "0" * 29, "12345678901234567890123456789012345",
]
DECIMAL_NUMBERS: list[Any] = [0, 1, 2, -1, 1.5, 99.95, 0.1, 1e3, 1e30, 1e-30, 10**30, 10**27, -0.0, 1.0000000000000002,
                              True, False, None, [], {}]


def _snapshot(value: Any) -> Any:
    """Everything that tells two decoded values apart: classes, fields set, decimal digits and exponents,
    time zones (class and offset)."""
    if isinstance(value, BaseModel):
        return (type(value), sorted(value.model_fields_set),
                tuple((name, _snapshot(item)) for name, item in value.__dict__.items()))
    if isinstance(value, Decimal):
        return (Decimal, value.as_tuple())
    if isinstance(value, datetime):
        return (datetime, value.isoformat(), type(value.tzinfo), value.utcoffset())
    if isinstance(value, date):
        return (date, value.isoformat())
    if isinstance(value, dict):
        return (dict, tuple((key, _snapshot(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(_snapshot(item) for item in value))
    return (type(value), value)


def _outcome(validate: Any, raw: bytes) -> Any:
    try:
        return "accepted", _snapshot(validate(raw))
    except ValidationError as exc:
        return "rejected", repr(exc.errors(include_url=False))  # a context's exception compares by its repr


def _reason(raw: bytes) -> tuple[str, str] | None:
    try:
        decode_activity(raw)
    except DecodeError as exc:
        return exc.error_class, exc.reason
    return None


def _same(raw: bytes) -> None:
    expected = _outcome(activity_adapter.validate_json, raw)
    assert _outcome(validate_activity_json, raw) == expected
    fast = _outcome(_plain_text_activity.validate_json, raw)
    assert fast[0] == "rejected" or fast == expected, raw


def _with(message: dict[str, Any], path: tuple[str | int, ...], value: Any) -> bytes:
    changed = copy.deepcopy(message)
    target: Any = changed
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return json.dumps(changed, separators=(",", ":"), ensure_ascii=False).encode()  # big integers too


@pytest.mark.parametrize(("message", "path"), DECIMAL_PLACES)
@pytest.mark.parametrize("value", DECIMAL_TEXTS + DECIMAL_NUMBERS)
def test_money_and_points_edges(message: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    _same(_with(message, path, value))


@pytest.mark.parametrize("number", ["1e30", "1E-31", "1.5e2", "0.30000000000000004", "123456789012345678901234567890",
                                    "-0", "1.0", "12345678901234567.5", "1" * 40 + ".0"])
def test_raw_json_numbers(number: str) -> None:
    for message, path in DECIMAL_PLACES:
        marker = "__NUMBER__"
        _same(_with(message, path, marker).replace(f'"{marker}"'.encode(), number.encode()))


@pytest.mark.parametrize("text", ["\\u0031\\u0032.5", "1\\u002e5", "\\u0031" * 29, "\\u0661"])
def test_escaped_decimal_texts(text: str) -> None:
    for message, path in DECIMAL_PLACES:
        _same(_with(message, path, "__TEXT__").replace(b"__TEXT__", text.encode()))


def _edits() -> list[bytes]:
    purchase = orjson.dumps(PURCHASE)
    edits = [
        _with(PURCHASE, ("payload", "line_items", 1, "item_id"), "L1"),  # duplicate line ids
        _with(PURCHASE, ("payload", "line_items", 1, "item_id"), " L1 "),  # the same after stripping
        _with(PURCHASE, ("payload", "line_items", 1, "item_id"), "l1"),
        _with(PURCHASE, ("payload", "line_items"), []),
        _with(PURCHASE, ("payload", "line_items", 0, "quantity"), "0"),
        _with(PURCHASE, ("payload", "line_items", 0, "quantity"), "1e40"),
        _with(PURCHASE, ("payload", "line_items", 0, "quantity"), -2),
        _with(PURCHASE, ("payload", "surprise"), 1),  # extra fields
        _with(PURCHASE, ("payload", "line_items", 0, "surprise"), 1),
        _with(PURCHASE, ("payload", "tenders", 0, "surprise"), "1.5"),
        _with(PURCHASE, ("surprise",), 1),
        _with(PURCHASE, ("event_time",), "2026-03-01T12:00:00"),  # naive
        _with(PURCHASE, ("event_time",), "2026-03-01T12:00:00Z"),
        _with(PURCHASE, ("event_time",), "2026-03-01T12:00:00-00:00"),
        _with(PURCHASE, ("event_time",), "2026-03-01"),
        _with(PURCHASE, ("event_time",), 1772362800),
        _with(PURCHASE, ("event_id",), "  e1  "),
        _with(PURCHASE, ("event_id",), "   "),
        _with(PURCHASE, ("event_id",), "e" * 201),
        _with(PURCHASE, ("customer_id",), 7),
        _with(PURCHASE, ("schema_version",), 2),
        _with(PURCHASE, ("type",), "Nope"),
        _with(PURCHASE, ("type",), "PointsRedemption"),
        _with(PURCHASE, ("payload", "bill_number"), " "),
        _with(PURCHASE, ("payload", "channel"), None),
        _with(PURCHASE, ("payload", "custom_fields"), {"a": 1.5, "b": "x", "c": True, "d": 10**30}),
        _with(PURCHASE, ("payload", "custom_fields"), {"a": None}),
        _with(REDEMPTION, ("payload", "points"), "0.0"),
        _with(RETURN, ("payload",), {"bill_number": "B1"}),
        _with(RETURN, ("payload",), {"bill_number": "B1", "whole_bill": True}),
        _with(REGISTRATION, ("payload", "membership_end"), "2027-02-30"),
        orjson.dumps(ENGAGEMENT), orjson.dumps(REGISTRATION), orjson.dumps(RETURN), orjson.dumps(ADJUSTMENT),
        purchase, purchase.replace(b'"amount":"99.95"', b'"amount":"99.95","amount":"1"', 1),
        purchase[:-1], b"[]", b"null", b"{}", b'{"type":"TransactionAdd"}', purchase + b" ",
    ]
    # several Money faults in one message: the errors (their order and count) must match too
    many = copy.deepcopy(PURCHASE)
    many["payload"]["amount"] = "1" * 30
    many["payload"]["tenders"][0]["amount"] = "-1"
    many["payload"]["line_items"][0]["amount"] = "NaN"
    many["payload"]["line_items"][1]["item_id"] = "L1"
    return [*edits, orjson.dumps(many)]


@pytest.mark.parametrize("raw", _edits())
def test_other_edges(raw: bytes) -> None:
    _same(raw)
    assert _reason(raw) == _reason(raw)  # decode_activity is deterministic on the fallback path


def test_dead_letter_reasons_unchanged() -> None:
    """The reasons come from the models' own errors whenever the fast validator rejects."""
    raw = _with(PURCHASE, ("payload", "amount"), "1" * 29)
    assert _reason(raw) == ("schema_violation",
                            "TransactionAdd: payload.amount: Decimal input should have no more than 28 digits in total")
    raw = _with(PURCHASE, ("payload", "line_items", 1, "item_id"), "L1")
    assert _reason(raw) == ("schema_violation", "TransactionAdd: payload: Value error, line_items: item_id values "
                            "must be unique within a bill")


_DECIMAL_TEXT = st.text(alphabet="0123456789.eE+-_ \u0661", max_size=34)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(DECIMAL_PLACES), st.one_of(_DECIMAL_TEXT, st.integers(), st.floats(),
                                                   st.decimals().map(str)))
def test_money_and_points_fuzzed(place: tuple[dict[str, Any], tuple[str | int, ...]], value: Any) -> None:
    message, path = place
    _same(_with(message, path, value))


def test_the_fast_validator_is_in_effect() -> None:
    """It takes every record of the benchmark workload with the models' values, and it is a validator of its
    own (it rejects a JSON number for an amount, which the models take): pydantic-core did not reuse the
    models' validators for it."""
    for record in workload.generate(300, 150, seed=3, days=60):
        assert record.value is not None
        assert _outcome(_plain_text_activity.validate_json, record.value) == \
            _outcome(activity_adapter.validate_json, record.value)
    raw = _with(REDEMPTION, ("payload", "points"), 12)
    assert _outcome(_plain_text_activity.validate_json, raw)[0] == "rejected"
    assert _outcome(validate_activity_json, raw) == _outcome(activity_adapter.validate_json, raw)
    assert _outcome(validate_activity_json, raw)[0] == "accepted"
