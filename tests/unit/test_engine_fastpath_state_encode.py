"""A settled encode's fast paths write what a fresh encode writes: a `promised` flip patches the kept JSON at the
offset read off it (the id's JSON is the id in quotes unless the id needs escaping, or holds a quote whose
escape could sit where the closing quote would); `StoredRows.get` (compiled, not `Mapping.get`) answers as a
mapping's `get`, decoding a stored row once; the head's kept texts (those of the fields around `seq`)
surround free-form fields written afresh."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from loyalty_stream.engine.state import (
    Bill,
    BillItem,
    CustomerState,
    Lot,
    StoredRows,
    new_state,
    state_from_dict,
    state_to_json,
)

from .test_engine_fastpath_state_memo import plain

D = Decimal
AT = datetime(2024, 3, 1, 10, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
# Plain ids, ids whose JSON is longer than the id (escapes, UTF-8), and ids holding a quote: `a"` puts its
# escaped quote exactly where a plain id's closing quote would be (a check of that byte alone would misplace
# the flag), `"` and `""` likewise at other lengths.
IDS = ["lot-757c81a37b96d6a539b8", "", "x", 'a"', '"', '""', 'q"uote', "back\\slash", "\\", "é-ü", "😀",
       "\n\t\x00", "a\x1fb", "tab\t"]


def a_state(lot_id: str) -> CustomerState:
    state = new_state("c1", "default")
    for n, points in enumerate(["10", "2.50", "123456.789"]):
        state.lots.append(Lot(f"{lot_id}{n}" if n else lot_id, D(points), D(points), True, AT,
                              AT + timedelta(days=1), AT + timedelta(days=365), "ev"))
    return state


@pytest.mark.parametrize("lot_id", IDS)
def test_a_promised_flip_writes_the_fresh_bytes_whatever_the_id(lot_id: str) -> None:
    state = a_state(lot_id)
    assert state_to_json(state, settle=True) == plain(state)
    for flips in ([0], [1, 2], [0, 1, 2], [1]):
        for n in flips:
            state.lots[n].promised = not state.lots[n].promised
        encoded = state_to_json(state, settle=True)
        assert encoded == plain(state)
        assert [row[3] for row in orjson.loads(encoded)["lots"]] == [lot.promised for lot in state.lots]
        assert [row[0] for row in orjson.loads(encoded)["lots"]] == [lot.lot_id for lot in state.lots]


def test_stored_rows_get_decodes_a_row_once_and_gives_the_default_for_a_key_not_held() -> None:
    decoded: list[str] = []

    def decode(key: str, row: list[Any]) -> Any:
        decoded.append(key)
        return ("decoded", key, *row)

    rows: StoredRows[Any] = StoredRows({"a": [1], "b": [2]}, decode)
    assert rows.get("x") is None
    assert rows.get("x", 7) == 7
    assert rows.get("x", default=8) == 8  # type: ignore[call-overload]  # (as `Mapping.get` at run time)
    assert "x" not in rows and len(rows) == 2  # nothing added
    first = rows.get("a")
    assert first == ("decoded", "a", 1) and decoded == ["a"]
    assert rows.get("a", 7) is first and rows["a"] is first and decoded == ["a"]  # decoded once, in place
    assert rows.peek_all()["a"] is first and rows.peek_all()["b"] == [2]
    rows["n"] = None  # a held value that is falsy or None is given, not the default
    rows["z"] = 0
    assert rows.get("n", 7) is None and rows.get("z", 7) == 0
    assert list(rows) == ["a", "b", "n", "z"]


def test_a_bill_read_through_get_encodes_as_a_decoded_one() -> None:
    state = a_state("lot")
    state.bills["B1"] = Bill("B1", "ev", AT, D("12.50"), {"i": BillItem("i", "sku", D("12.50"), D("1"))})
    stored = state_from_dict(orjson.loads(state_to_json(state, settle=True)))
    assert isinstance(stored.bills, StoredRows)
    assert stored.bills.get("B2") is None
    bill = stored.bills.get("B1")
    assert isinstance(bill, Bill) and bill.amount == D("12.50")
    bill.returned_amount = D("2")
    assert state_to_json(stored, settle=True) == plain(stored)


def test_a_head_with_free_form_fields_writes_them_afresh_around_the_kept_texts() -> None:
    state = a_state("lot")
    state.registered_at, state.tier = AT, "gold"
    steps: list[Callable[[], object]] = [
        lambda: state.custom_fields.update(city="Pune", score=D("1.50")),  # changed in place
        lambda: state.extended_fields.update({'q"k': ["x", 1], "é": None}),
        lambda: state.custom_fields.update(score=D("2")),
        lambda: state.custom_fields.clear(),
        lambda: setattr(state, "registered_at", AT.astimezone(UTC)),
        lambda: state.extended_fields.clear(),
        lambda: state.custom_fields.update(n=3),
        lambda: setattr(state, "tier", None),
    ]
    assert state_to_json(state, settle=True) == plain(state)
    for step in steps:
        step()
        state.seq += 1
        encoded = state_to_json(state, settle=True)
        assert encoded == plain(state)
        head = orjson.loads(encoded)
        assert head["custom_fields"] == {k: {"$d": str(v)} if isinstance(v, Decimal) else v
                                         for k, v in state.custom_fields.items()}
        assert head["extended_fields"] == state.extended_fields and head["seq"] == state.seq
