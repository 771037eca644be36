"""A settled encode writes the head (but `seq`) and the counters' section from texts it kept with the objects they
were formatted from (`state.StateTexts`): the same bytes as formatting the state afresh, whatever changed between
encodes (equal values of other texts included), in copies sharing the memo too; decoded bills' and redemptions'
times are the stored times' memo's values."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_stream.engine import times
from loyalty_stream.engine.state import (
    ZERO,
    Bill,
    BillItem,
    CustomerState,
    Redemption,
    copy_state,
    new_state,
    parse_stored_time,
    state_from_dict,
    state_to_json,
)

from .test_codec_lifecycle_fastpath import IST
from .test_engine_fastpath_state_memo import plain

D = Decimal
AT = datetime(2024, 3, 1, 10, 30, tzinfo=IST)
KEYS = ["cap:a", 'q"uote', "back\\slash", "é-ü", "😀", "\n\t\x00", "", "cap:a:2024-03"]
DECIMALS = ["0", "0.00", "1.5", "1.50", "-3", "1E+2", "12345678901234567890.12", "-0"]
DECIMAL_FIELDS = ["debt", "lifetime_earned", "lifetime_purchases", "redeemed", "expired", "returned"]


def check(state: CustomerState) -> bytes:
    encoded = state_to_json(state, settle=True)
    assert encoded == plain(state)
    assert state_to_json(state, settle=True) == encoded  # and again, from what it kept
    return encoded


# One change to the state (every one also in another object of an equal value: its own text).
change = st.one_of(
    st.tuples(st.just("decimal"), st.sampled_from(DECIMAL_FIELDS), st.sampled_from(DECIMALS)),
    st.tuples(st.just("same"), st.sampled_from(DECIMAL_FIELDS), st.just("")),  # an equal value, a new object
    st.tuples(st.just("counter"), st.sampled_from(KEYS), st.sampled_from(DECIMALS)),
    st.tuples(st.just("drop"), st.sampled_from(KEYS), st.just("")),
    st.tuples(st.just("count"), st.just(""), st.sampled_from(["0", "7", "123456789012"])),
    st.tuples(st.just("seq"), st.just(""), st.sampled_from(["0", "1", "99", "9007199254740993"])),
    st.tuples(st.just("tier"), st.sampled_from([None, "gold", 'g"old', "ü"]), st.just("")),
    st.tuples(st.just("registered"), st.sampled_from(["none", "ist", "utc", "same"]), st.just("")),
    st.tuples(st.just("membership"), st.sampled_from(["none", "a", "b"]), st.just("")),
    st.tuples(st.just("custom"), st.sampled_from(["", "a", "d"]), st.just("")),
    st.tuples(st.just("ids"), st.sampled_from(KEYS), st.just("")),
)


def apply(state: CustomerState, what: tuple[str, Any, str]) -> None:
    kind, name, text = what
    if kind == "decimal":
        setattr(state, name, ZERO if text == "0" and name == "debt" else D(text))
    elif kind == "same":
        setattr(state, name, D(str(getattr(state, name))))
    elif kind == "counter":
        state.counters[name] = D(text)
    elif kind == "drop":
        state.counters.pop(name, None)
    elif kind == "count":
        state.purchase_count = int(text)
    elif kind == "seq":
        state.seq = int(text)
    elif kind == "tier":
        state.tier = None if name is None else name[:]
        if name is not None:
            state.tier = "".join(list(name))  # another object of the same text
    elif kind == "registered":
        state.registered_at = {"none": None, "ist": AT, "utc": AT.astimezone(UTC),
                               "same": AT + timedelta(0)}[name]
    elif kind == "membership":
        state.membership_end = {"none": None, "a": date(2025, 1, 31), "b": date(2025, 1, 31) + timedelta(0)}[name]
    elif kind == "custom":
        if name:
            state.custom_fields[name] = D("1.50") if name == "d" else "x"
        else:
            state.custom_fields.clear()
    else:
        state.customer_id = name or "c1"  # an odd customer id: the head's JSON is escaped


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(change, max_size=4), min_size=1, max_size=8), st.booleans())
def test_settled_encodes_write_the_plain_encoding_after_any_changes(
        rounds: list[list[tuple[str, Any, str]]], copy_between: bool) -> None:
    """Sequences of changes between settled encodes, optionally in a copy sharing the memo (both encoded)."""
    state = new_state("c1", "bench")
    check(state)
    for changes in rounds:
        if copy_between:
            other = copy_state(state)
            assert other.coded is state.coded
            for what in changes:
                apply(other, what)
            check(other)
            check(state)  # the original, after its copy's encode changed the shared memo
            state = other
        else:
            for what in changes:
                apply(state, what)
            check(state)
        assert state_from_dict(orjson.loads(state_to_json(state, settle=True))) == state


def test_an_equal_decimal_in_another_object_is_formatted_again() -> None:
    """Kept texts are by identity: `1.5` replaced by an equal `1.50` writes `1.50` (a value memo would not)."""
    state = new_state("c1", "bench")
    state.lifetime_earned = D("1.5")
    state.counters["cap:a"] = D("2")
    assert b'"lifetime_earned":"1.5"' in check(state)
    state.lifetime_earned = D("1.50")
    state.counters["cap:a"] = D("2.0")
    encoded = check(state)
    assert b'"lifetime_earned":"1.50"' in encoded and b'"cap:a":"2.0"' in encoded
    state.registered_at = AT
    assert b"+05:30" in check(state)
    state.registered_at = AT.astimezone(UTC)  # equal instant, another offset
    assert b"+05:30" not in check(state)


def test_counters_removed_are_forgotten() -> None:
    state = new_state("c1", "bench")
    state.counters = {key: D(i) for i, key in enumerate(KEYS)}
    check(state)
    state.counters = {"cap:a": D(1)}
    check(state)
    assert state.coded is not None and list(state.coded.counters) == ["cap:a"]


def test_a_plain_encode_and_a_decode_ignore_the_memo() -> None:
    state = new_state("c1", "bench")
    state.counters["cap:a"] = D("3")
    check(state)
    state.counters["cap:a"] = D("4")
    assert state_to_json(state) == plain(state)
    assert state_from_dict(orjson.loads(state_to_json(state))).coded is None


def test_decoded_bills_and_redemptions_take_the_stored_times_memo() -> None:
    """Their times are what the stored time memo gives (shared zones: cheap compares), equal to a plain parse
    and written back as the same text."""
    state = new_state("c1", "bench")
    minus_five = timezone(-timedelta(hours=5))
    for i, at in enumerate([AT, AT.astimezone(UTC), AT.replace(microsecond=5), AT.astimezone(minus_five)]):
        items = {"i": BillItem("i", "s", D("10.00"), D(1))}
        state.bills[f"b{i}"] = Bill(f"b{i}", f"e{i}", at, D("10.00"), items)
        state.redemptions[f"r{i}"] = Redemption(f"r{i}", f"e{i}", at, D("5"), None)
    raw = state_to_json(state)
    decoded = state_from_dict(orjson.loads(raw))
    stored = orjson.loads(raw)
    for number, bill in decoded.bills.items():
        text = stored["bills"][number][1]
        assert bill.event_time == datetime.fromisoformat(text) and bill.event_time.isoformat() == text
        assert bill.event_time is parse_stored_time(text)
        assert bill.event_time.tzinfo is times.fixed(datetime.fromisoformat(text)).tzinfo
    for rid, redemption in decoded.redemptions.items():
        text = stored["redemptions"][rid][1]
        assert redemption.at == datetime.fromisoformat(text) and redemption.at is parse_stored_time(text)
    assert decoded == state
    assert state_to_json(decoded) == raw
