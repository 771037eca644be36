"""A settled encode (the processor's cached states) writes exactly what formatting the state afresh writes: a lot
whose only change is its `promised` flag is patched in its kept JSON, a new lot takes the texts of the date-times
it shares with the lot written before it, and the sections are joined in one copy."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from bench import workload
from loyalty_stream.engine.state import (
    ZERO,
    Bill,
    BillItem,
    CustomerState,
    Lot,
    Redemption,
    copy_state,
    new_state,
    state_from_dict,
    state_to_dict,
    state_to_json,
)
from loyalty_stream.stream.processor import ActivityProcessor, decode_state

from .conftest import process_all
from .test_codec_lifecycle_fastpath import IST, plain_row

D = Decimal
FIXED_NOW = datetime(2030, 1, 1, tzinfo=UTC)


def plain_bill(bill: Bill) -> list[Any]:
    return [bill.event_id, bill.event_time.isoformat(), str(bill.amount), str(bill.returned_amount),
            bill.fully_returned, [[i.item_id, i.sku, str(i.amount), str(i.quantity), str(i.returned_quantity),
                                   str(i.returned_amount)] for i in bill.items.values()]]


def plain_redemption(r: Redemption) -> list[Any]:
    return [r.event_id, r.at.isoformat(), str(r.points), r.bill_number, [[c.lot_id, str(c.points)]
                                                                           for c in r.consumed], r.reversed]


def plain_json(state: CustomerState) -> bytes:
    """The state's stored bytes formatted afresh: every lot, bill and redemption from its fields, nothing kept."""
    fresh = copy_state(state)
    data = state_to_dict(fresh)
    data["lots"] = [plain_row(lot) for lot in state.lots]
    data["bills"] = {number: plain_bill(bill) for number, bill in fresh.bills.items()}
    data["redemptions"] = {rid: plain_redemption(r) for rid, r in fresh.redemptions.items()}
    return orjson.dumps(data)


def check(state: CustomerState, *, equal: bool = True) -> bytes:
    """A settled encode of `state` is the plain encoding, written again from what it kept, and round-trips
    (`equal`: to an equal state; ambiguous wall times never compare equal across zones)."""
    encoded = state_to_json(state, settle=True)
    assert encoded == plain_json(state)
    assert state_to_json(state, settle=True) == encoded
    decoded = decode_state(encoded)
    assert decoded == state or not equal
    assert state_to_json(decoded, settle=True) == encoded == state_to_json(decoded)
    return encoded


def a_lot(lot_id: str, points: str, remaining: str, promised: bool, earned_at: datetime, **fields: Any) -> Lot:
    values: dict[str, Any] = {"available_at": None, "expires_at": None, "source_event_id": "ev", **fields}
    return Lot(lot_id, D(points), D(remaining), promised, earned_at, **values)


ODD_IDS = ["l1", 'a"b', "x\\y", "é-ü", "😀", '",true,"', 'x",false,', '","1","1",true,', "\n\t\x00", ""]


@pytest.mark.parametrize("lot_id", ODD_IDS)
@pytest.mark.parametrize("points,remaining", [("10.00", "10.00"), ("4.5", "0.25"), ("1E+2", "-3")])
def test_a_flipped_promise_is_written_as_a_full_encode_writes_it(lot_id: str, points: str, remaining: str) -> None:
    """The flag is patched at its offset in the kept JSON, whatever the id's JSON (escapes, multi-byte text,
    look-alikes of what comes after it) and the points' texts: both ways, again and again."""
    at = datetime(2024, 3, 1, 10, 30, tzinfo=IST)
    state = new_state("c1", "bench")
    state.lots = [a_lot("before", "1.00", "1.00", True, at),
                  a_lot(lot_id, points, remaining, True, at, available_at=at + timedelta(days=3),
                        expires_at=at + timedelta(days=300), reminded=(7,), cap_keys=("cap:x",)),
                  a_lot("after", "2.00", "2.00", False, at)]
    check(state)
    for promised in (False, True, False):
        state.lots[1].promised = promised
        encoded = check(state)
        assert orjson.loads(encoded)["lots"][1][3] is promised


@pytest.mark.parametrize("name", ["remaining", "reminded", "expires_at", "shortfall", "cap_keys", "lot_id"])
def test_a_flipped_promise_with_another_change_is_written_afresh(name: str) -> None:
    at = datetime(2024, 3, 1, 10, 30, tzinfo=IST)
    changes: dict[str, Any] = {"remaining": D("0.50"), "reminded": (7,), "expires_at": at + timedelta(days=9),
                               "shortfall": D("0.25"), "cap_keys": ("cap:y",), "lot_id": "other"}
    state = new_state("c1", "bench")
    state.lots = [a_lot("l1", "3.00", "3.00", True, at, expires_at=at + timedelta(days=30))]
    check(state)
    state.lots[0].promised = False
    setattr(state.lots[0], name, changes[name])
    check(state)


def test_a_decoded_lot_flipped_is_written_afresh() -> None:
    """A decoded row's texts were not written here: a flipped decoded lot is formatted from its fields."""
    state = new_state("c1", "bench")
    row = ["l1", " 1.50", "1.5", True, "2024-03-01T10:30:00Z", None, None, "ev", "earn", None, None, None, None,
           False, [], [], "0"]
    data = state_to_dict(state)
    data["lots"] = [row]
    decoded = state_from_dict(data)
    state_to_json(decoded, settle=True)
    decoded.lots[0].promised = False
    check(decoded)


def test_new_lots_share_only_the_very_date_times_of_the_lot_before() -> None:
    """A new lot takes a date-time's text from the lot written before it only for the same object: equal
    instants in other offsets, a repeated wall time's fold, None, and the lot before being unchanged, each
    keep their own text."""
    at = datetime(2024, 3, 1, 10, 30, tzinfo=IST)
    utc = at.astimezone(UTC)
    berlin = datetime(2024, 10, 27, 2, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    later = at + timedelta(days=30)
    for settle in (False, True):
        state = new_state("c1", "bench")
        state.lots = [a_lot("old", "1.00", "1.00", False, at, expires_at=later)]
        state_to_json(state, settle=True)
        state.lots += [
            a_lot("n1", "2.00", "2.00", True, at, available_at=at, expires_at=later),
            a_lot("n2", "2.00", "2.00", True, at, available_at=at, expires_at=later),  # the same objects
            a_lot("n3", "3.00", "3.00", True, utc, available_at=None, expires_at=later.astimezone(UTC)),
            a_lot("n4", "3.00", "3.00", True, utc, available_at=utc, expires_at=None),
            a_lot("n5", "4.00", "4.00", False, berlin, available_at=berlin.replace(fold=1), expires_at=berlin),
            a_lot("n6", "4.00", "4.00", False, berlin.replace(fold=1), available_at=berlin, expires_at=at),
        ]
        state.lots[0].remaining = D("0.50")  # changed: written first, from its own old row
        state.lots.append(a_lot("n7", "5.00", "5.00", False, at, available_at=utc, expires_at=at))
        if settle:
            check(state, equal=False)
        else:
            assert state_to_json(state) == plain_json(state)
            assert state_to_dict(state)["lots"] == [plain_row(lot) for lot in state.lots]


def test_bills_with_returns_and_the_shared_zero_are_written_as_formatted() -> None:
    """A new bill's unreturned amounts are the shared ZERO ("0"); others, equal or not, keep their own scale."""
    at = datetime(2024, 3, 1, 10, 30, tzinfo=IST)
    state = new_state("c1", "bench")
    state.bills = {
        "B1": Bill("B1", "e1", at, D("30.00"), {"i1": BillItem("i1", "s", D("10.00"), D("1"))}),
        "B2": Bill("B2", "e2", at, D("20.00"), {"i1": BillItem("i1", "s", D("10.00"), D("2"), D("0.0"), D("0.00")),
                                                "i2": BillItem("i2", "t", D("10.00"), D("1"), D("1"), D("10.00"))},
                   D("0.00"), True),
    }
    assert state.bills["B1"].returned_amount is ZERO
    encoded = check(state)
    assert b'"0.0","0.00"' in encoded


@pytest.fixture(scope="module")
def run_checked() -> Counter[str]:
    """The bench workload through a processor that caches its states (settled encodes): after every record, the
    cached state's stored bytes are its plain encoding. Counts the kinds of lot changes seen between records."""
    registry = workload.load_registry()
    processor = ActivityProcessor(registry, clock=lambda: FIXED_NOW, state_cache=64)
    store: dict[bytes, bytes] = {}
    before: dict[str, tuple[Any, ...]] = {}
    kinds: Counter[str] = Counter()
    names = [f.name for f in dataclasses.fields(Lot) if f.compare]
    for processed in process_all(processor, workload.generate(1500, 60, seed=5, days=200), store):
        if processed.state_key is None or processed.state is None:
            continue
        raw, state = processor._states[processed.state_key]
        assert raw == processed.state == plain_json(state)
        assert state_from_dict(orjson.loads(raw)) == state
        for lot in state.lots:
            now = tuple(getattr(lot, name) for name in names)
            was = before.get(lot.lot_id)
            if was is None:
                kinds["new"] += 1
            elif was != now:
                kinds["+".join(n for n, old, new in zip(names, was, now, strict=True) if old != new)] += 1
            before[lot.lot_id] = now
        kinds["bills"] += len(state.bills)
        kinds["redemptions"] += len(state.redemptions)
    return kinds


def test_the_workload_stores_the_plain_encoding_after_every_change(run_checked: Counter[str]) -> None:
    """Conversions (the flag alone), expiry and redemptions (remaining), reminders, returns (shortfall) and new
    lots all went through the settled encode."""
    assert run_checked["promised"] > 50
    assert run_checked["new"] > 500
    assert run_checked["remaining"] > 10
    assert any("reminded" in kind for kind in run_checked)
    assert any("shortfall" in kind for kind in run_checked)
    assert run_checked["bills"] > 0 and run_checked["redemptions"] > 0
