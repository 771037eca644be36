"""The codec's memos give what encoding afresh gives: a lot's native memo (`state.LotMemo`) tells an unchanged lot
from a changed one field by field (identity, not equality), a `promised` flip rewrites only the kept JSON of a
row the codec wrote; and a settled encode settles `StoredRows` in place (entries back to rows, texts kept only
for the present entries and only for their very rows), whatever was set, read, deleted or re-added between."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_stream.engine.state import (
    ZERO,
    Bill,
    BillItem,
    CustomerState,
    Lot,
    LotMemo,
    Redemption,
    StoredRows,
    copy_state,
    new_state,
    state_from_dict,
    state_to_dict,
    state_to_json,
)

from .test_codec_lifecycle_fastpath import IST

D = Decimal
AT = datetime(2024, 3, 1, 10, 30, tzinfo=IST)


def plain(state: CustomerState) -> bytes:
    """The state's bytes formatted afresh: a copy without any memo, encoded by orjson from the stored form."""
    fresh = copy_state(state)
    fresh.coded = None
    for lot in fresh.lots:
        lot.stored = None
    return orjson.dumps(state_to_dict(fresh))


def lot(n: int, **fields: Any) -> Lot:
    made = Lot(f"l{n}", D("10.00"), D("10.00"), False, AT, AT + timedelta(days=1), AT + timedelta(days=30),
               f"e{n}", reminded=(7,), cap_keys=("cap:a",))
    for name, value in fields.items():
        setattr(made, name, value)
    return made


def bill(number: str, amount: str = "100.00") -> Bill:
    return Bill(number, f"e-{number}", AT, D(amount), {"i1": BillItem("i1", "sku", D(amount), D("1"))})


def redemption(rid: str) -> Redemption:
    return Redemption(rid, f"e-{rid}", AT, D("5"), None)


def state_with(lots: int, bills: int) -> CustomerState:
    state = new_state("c1", "bench")
    state.lots = [lot(n) for n in range(lots)]
    for n in range(bills):
        state.bills[f"b{n}"] = bill(f"b{n}")
    state.redemptions["r0"] = redemption("r0")
    return state


# Field changes: a new value, and an equal value in another object (its own text, or none shared).
LOT_CHANGES: list[tuple[str, Any]] = [
    ("lot_id", "other"), ("lot_id", "".join(["l", "0"])), ("points", D("1.50")), ("points", D("10.0")),
    ("remaining", D("0.50")), ("remaining", D("10.00")), ("promised", True), ("earned_at", AT.astimezone(UTC)),
    ("available_at", None), ("available_at", AT + timedelta(days=2)), ("expires_at", None),
    ("expires_at", (AT + timedelta(days=30)).astimezone(UTC)), ("source_event_id", "x"), ("origin", "adjust"),
    ("condition_code", "c"), ("bill_number", "b1"), ("line_item_id", "i1"), ("expiry_code", "x1"),
    ("rolling", True), ("reminded", ()), ("reminded", (7, 3)), ("cap_keys", ()), ("cap_keys", ("cap:a", "b")),
    ("shortfall", D("0.5")), ("shortfall", D("0")),
]

lot_step = st.one_of(
    st.tuples(st.just("change"), st.integers(0, 3), st.sampled_from(LOT_CHANGES)),
    st.tuples(st.just("flip"), st.integers(0, 3), st.just(None)),  # `promised` alone: the kept JSON rewritten
    st.tuples(st.just("add"), st.integers(0, 3), st.just(None)),
    st.tuples(st.just("drop"), st.integers(0, 3), st.just(None)),
    st.tuples(st.just("copy"), st.integers(0, 3), st.just(None)),  # a copy of the lot sharing its memo
    st.tuples(st.just("reload"), st.just(0), st.just(None)),  # decoded: memos of stored rows
    st.tuples(st.just("plain"), st.just(0), st.just(None)),  # an unsettled encode between
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(lot_step, max_size=4), min_size=1, max_size=6))
def test_lots_encode_as_afresh_whatever_changed(rounds: list[list[tuple[str, int, Any]]]) -> None:
    state = state_with(4, 0)
    added = 10
    for steps in rounds:
        for kind, index, what in steps:
            lots = state.lots
            at = index % len(lots) if lots else 0
            if kind == "change" and lots:
                name, value = what
                setattr(lots[at], name, value)
            elif kind == "flip" and lots:
                lots[at].promised = not lots[at].promised
            elif kind == "add":
                added += 1
                lots.insert(at, lot(added))
            elif kind == "drop" and lots:
                del lots[at]
            elif kind == "copy" and lots:
                copied = state.lots[at]
                lots.append(Lot(copied.lot_id, copied.points, copied.remaining, copied.promised, copied.earned_at,
                                copied.available_at, copied.expires_at, copied.source_event_id, copied.origin,
                                copied.condition_code, copied.bill_number, copied.line_item_id,
                                copied.expiry_code, copied.rolling, copied.reminded, copied.cap_keys,
                                copied.shortfall, copied.stored))
            elif kind == "reload":
                state = state_from_dict(orjson.loads(state_to_json(state)))
            elif kind == "plain":
                assert state_to_json(state) == plain(state)
        expected = plain(state)
        assert state_to_json(state, settle=True) == expected
        assert all(isinstance(x.stored, LotMemo) and x.stored.text is not None for x in state.lots)
        assert state_to_json(state, settle=True) == expected  # from the kept texts
        assert state_to_json(state) == expected
        assert state_from_dict(orjson.loads(expected)) == state


def test_a_promised_flip_rewrites_only_a_codec_row() -> None:
    """A decoded lot's memo holds the stored row (`own` False): a flip is written from the fields; a row the
    codec wrote keeps its JSON with only the flag replaced, the memo updated in place (shared by copies)."""
    state = state_with(2, 0)
    state.lots[0].promised = True
    raw = state_to_json(state, settle=True)
    decoded = state_from_dict(orjson.loads(raw))
    memo = decoded.lots[0].stored
    assert memo is not None and not memo.own and memo.text is None
    state_to_json(decoded, settle=True)
    decoded.lots[0].promised = False
    assert state_to_json(decoded, settle=True) == plain(decoded)
    assert decoded.lots[0].stored is not memo  # written from its fields
    codec_memo = decoded.lots[0].stored
    assert codec_memo is not None and codec_memo.own
    twin = copy_state(decoded)
    assert twin.lots[0].stored is codec_memo
    decoded.lots[0].promised = True
    assert state_to_json(decoded, settle=True) == plain(decoded)
    assert decoded.lots[0].stored is codec_memo and codec_memo.promised is True  # the same memo, flag replaced
    assert state_to_json(twin, settle=True) == plain(twin)  # the copy (still False) compares with it: written anew
    assert b'"l0","10.00","10.00",false' in state_to_json(twin, settle=True)


def test_equal_values_in_other_objects_are_changes() -> None:
    """Identity decides, not equality: "10.0" for "10.00", the same instant in another zone."""
    state = state_with(1, 0)
    state_to_json(state, settle=True)
    state.lots[0].points = D("10.0")
    state.lots[0].earned_at = AT.astimezone(UTC)
    encoded = state_to_json(state, settle=True)
    assert b'"10.0"' in encoded and b"+00:00" in encoded and encoded == plain(state)


bill_step = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(["b0", "b1", "b2", "b9"]), st.sampled_from(["1.00", "100.00"])),
    st.tuples(st.just("read"), st.sampled_from(["b0", "b1", "b2", "b9"]), st.just("")),  # decodes in place
    st.tuples(st.just("return"), st.sampled_from(["b0", "b1", "b2", "b9"]), st.just("")),  # a read bill changed
    st.tuples(st.just("del"), st.sampled_from(["b0", "b1", "b2", "b9"]), st.just("")),
    st.tuples(st.just("row"), st.sampled_from(["b0", "b1", "b9"]), st.just("")),  # a row set back (a list)
    st.tuples(st.just("redeem"), st.sampled_from(["r0", "r1"]), st.just("")),
    st.tuples(st.just("unredeem"), st.sampled_from(["r0", "r1"]), st.just("")),
    st.tuples(st.just("reload"), st.just(""), st.just("")),
    st.tuples(st.just("copy"), st.just(""), st.just("")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(bill_step, max_size=5), min_size=1, max_size=6))
def test_bills_and_redemptions_settle_in_place(rounds: list[list[tuple[str, str, str]]]) -> None:
    state = state_with(1, 3)
    for steps in rounds:
        for kind, key, text in steps:
            bills = state.bills
            if kind == "set":
                bills[key] = bill(key, text)
            elif kind == "read" and key in bills:
                assert bills[key].bill_number == key
            elif kind == "return" and key in bills:
                bills[key].returned_amount = D("3.50")
                for item in bills[key].items.values():
                    item.returned_quantity = D("1")
            elif kind == "del" and key in bills:
                del bills[key]
            elif kind == "row" and type(bills) is StoredRows:  # (a plain dict holds objects only)
                bills[key] = ["e-row", "2024-03-01T10:30:00+05:30", "7", "0", False, []]
            elif kind == "redeem":
                state.redemptions[key] = redemption(key)
            elif kind == "unredeem" and key in state.redemptions:
                del state.redemptions[key]
            elif kind == "reload":
                state = state_from_dict(orjson.loads(state_to_json(state)))
            elif kind == "copy":
                state = copy_state(state)
        expected = plain(state)
        before = state.bills
        assert state_to_json(state, settle=True) == expected
        if type(before) is StoredRows:
            assert state.bills is before  # settled in place
        for items in (state.bills, state.redemptions):
            assert type(items) is StoredRows
            held = items.peek_all()
            assert all(type(v) is list for v in held.values())
            texts = items.texts()
            assert texts is not None and texts.keys() == held.keys()  # only the present entries' texts
            assert all(texts[k][0] is v for k, v in held.items())
        assert state_to_json(state, settle=True) == expected  # from the kept texts
        assert state_to_json(state) == expected
        assert state_from_dict(orjson.loads(expected)) == state


def test_a_plain_mapping_settles_into_stored_rows() -> None:
    """A new customer's bills are a plain dict: settled into the `StoredRows` a decode would hold."""
    state = state_with(0, 2)
    assert type(state.bills) is dict
    expected = plain(state)
    assert state_to_json(state, settle=True) == expected
    assert type(state.bills) is StoredRows and list(state.bills) == ["b0", "b1"]
    assert state.bills["b1"] == bill("b1") and state.redemptions["r0"] == redemption("r0")
    state.bills["b1"].returned_amount = ZERO + D("1")
    assert state_to_json(state, settle=True) == plain(state)


def test_a_changed_decoded_lot_formats_its_fields_afresh() -> None:
    """A decoded row's texts are what was stored, not necessarily what formatting gives: a changed decoded lot
    is written from its fields (as encoding afresh writes it), not from the stored row's texts."""
    state = state_with(2, 0)
    data = orjson.loads(state_to_json(state))
    for row in data["lots"]:
        row[1] = row[2] = "+10.00"
        row[4] = "2024-03-01T10:30:00.000+05:30"
        row[6] = "2024-03-31T05:00:00.000000+00:00"
    decoded = state_from_dict(data)
    assert orjson.loads(state_to_json(decoded)) == data  # unchanged: the stored rows as they were
    for settle in (False, True):
        for changed in decoded.lots:
            changed.remaining = D("4.00")
        encoded = state_to_json(decoded, settle=settle)
        assert encoded == plain(decoded) and b"+10.00" not in encoded and b".000" not in encoded
        decoded = state_from_dict(data)
