"""Fast paths of the state codec and of materialisation give exactly what the plain code gave.

The codec remembers date-time texts per object and reuses a lot's points text for its remaining; the running
balances re-scale only when a bucket lost an exponent; transitions are named tuples and `acting_as` a class.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from loyalty_stream.engine import lifecycle
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.state import (
    ZERO,
    CustomerState,
    Lot,
    new_state,
    state_from_dict,
    state_to_dict,
    state_to_json,
)

from .conftest import activity
from .test_redeem import make_program

D = Decimal
IST = timezone(timedelta(hours=5, minutes=30))


def plain_row(lot: Lot) -> list[Any]:
    """A lot's row as the codec always wrote it: every value formatted on its own."""
    def t(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return [lot.lot_id, str(lot.points), str(lot.remaining), lot.promised, lot.earned_at.isoformat(),
            t(lot.available_at), t(lot.expires_at), lot.source_event_id, lot.origin, lot.condition_code,
            lot.bill_number, lot.line_item_id, lot.expiry_code, lot.rolling, list(lot.reminded), list(lot.cap_keys),
            str(lot.shortfall)]


def a_lot(lot_id: str, points: Decimal, earned_at: datetime, **fields: Any) -> Lot:
    values: dict[str, Any] = {"remaining": points, "promised": False, "available_at": None, "expires_at": None,
                              "source_event_id": "ev", **fields}
    return Lot(lot_id, points, earned_at=earned_at, **values)


def state_of(*lots: Lot) -> CustomerState:
    state = new_state("c1", "default")
    state.lots.extend(lots)
    return state


def rows(state: CustomerState) -> list[Any]:
    return list(orjson.loads(state_to_json(state))["lots"])


def test_one_instant_in_other_offsets_keeps_each_offset() -> None:
    """Equal date-times (one instant) are told apart: the text is remembered per object, not per value."""
    utc = datetime(2024, 3, 1, 3, 30, tzinfo=UTC)
    ist = utc.astimezone(IST)
    zoned = utc.astimezone(ZoneInfo("Asia/Kolkata"))
    assert utc == ist == zoned
    state = state_of(a_lot("a", D("1.00"), utc, expires_at=ist), a_lot("b", D("2.00"), ist, expires_at=zoned),
                     a_lot("c", D("3.00"), zoned, expires_at=utc))
    assert rows(state) == [plain_row(lot) for lot in state.lots]
    assert {row[4] for row in rows(state)} == {"2024-03-01T03:30:00+00:00", "2024-03-01T09:00:00+05:30"}


def test_a_repeated_wall_time_keeps_its_fold() -> None:
    """Two date-times equal as values in one zone (the hour repeated when DST ends) keep their offsets."""
    zone = ZoneInfo("Europe/Berlin")
    first = datetime(2024, 10, 27, 2, 30, tzinfo=zone)
    second = first.replace(fold=1)
    state = state_of(a_lot("a", D("1"), first), a_lot("b", D("1"), second))
    assert [row[4] for row in rows(state)] == ["2024-10-27T02:30:00+02:00", "2024-10-27T02:30:00+01:00"]


def test_date_times_made_again_after_their_first_were_freed_get_their_own_text() -> None:
    """An id can be reused once its object is gone: the remembered text must not follow the id."""
    for hour in range(50):
        at = datetime(2024, 3, 1, hour % 24, tzinfo=IST) + timedelta(days=hour)
        state = state_of(a_lot(f"l{hour}", D("1.5"), at, expires_at=at + timedelta(days=30)))
        assert rows(state) == [plain_row(state.lots[0])]
        del at, state


def test_points_remaining_and_shortfall_keep_their_own_scale() -> None:
    at = datetime(2024, 3, 1, 9, tzinfo=IST)
    points = D("20.7")
    lots = [
        a_lot("shared", points, at),  # remaining is points: one text
        a_lot("equal", points, at, remaining=D("20.70")),  # equal, not the same: its own text
        a_lot("taken", D("10"), at, remaining=D("4.25")),
        a_lot("zero", D("5"), at, shortfall=ZERO),
        a_lot("zero-cents", D("5"), at, shortfall=D("0.00")),  # equal to ZERO, written as itself
        a_lot("zero-other", D("5"), at, shortfall=D(0)),
        a_lot("short", D("5"), at, shortfall=D("1.50")),
    ]
    state = state_of(*lots)
    assert rows(state) == [plain_row(lot) for lot in lots]
    assert [row[16] for row in rows(state)] == ["0", "0", "0", "0", "0.00", "0", "1.50"]
    assert [row[2] for row in rows(state)][:3] == ["20.7", "20.70", "4.25"]


def test_a_decoded_lot_encodes_as_its_row_until_any_field_changes() -> None:
    at = datetime(2024, 3, 1, 9, tzinfo=IST)
    state = state_of(a_lot("a", D("10.00"), at, promised=True, available_at=at + timedelta(days=8),
                           expires_at=at + timedelta(days=180), reminded=(30,), cap_keys=("k",)))
    raw = state_to_json(state)
    changes: dict[str, Any] = {
        "lot_id": "b", "points": D("10.0"), "remaining": D("3.00"), "promised": False,
        "earned_at": at.astimezone(UTC), "available_at": None, "expires_at": at + timedelta(days=181),
        "source_event_id": "other", "origin": "adjust", "condition_code": "C", "bill_number": "B",
        "line_item_id": "L", "expiry_code": "E", "rolling": True, "reminded": (30, 7), "cap_keys": (),
        "shortfall": D("0.00"),
    }
    for name, value in changes.items():
        decoded = state_from_dict(orjson.loads(raw))
        assert state_to_json(decoded) == raw  # unchanged: the stored row
        setattr(decoded.lots[0], name, value)
        assert rows(decoded) == [plain_row(decoded.lots[0])], name
        assert rows(decoded) == rows(decoded)  # the memo taken by that encode is right too


def test_the_codec_round_trips_and_encodes_like_the_plain_rows() -> None:
    at = datetime(2024, 3, 1, 9, tzinfo=IST)
    lots = [a_lot(f"l{i}", D(f"{i}.{i:02d}"), at, expires_at=at + timedelta(days=i)) for i in range(1, 6)]
    state = state_of(*lots)
    state.last_event_time = at
    data = state_to_dict(state)
    assert data["lots"] == [plain_row(lot) for lot in lots]
    assert data["last_event_time"] == at.isoformat()
    again = state_from_dict(orjson.loads(state_to_json(state)))
    assert state_to_json(again) == state_to_json(state)
    assert [plain_row(lot) for lot in again.lots] == data["lots"]


def promised_state(amounts: list[str]) -> CustomerState:
    at = datetime(2024, 3, 1, 10, tzinfo=UTC)
    state = new_state("c1", "default")
    for i, amount in enumerate(amounts):
        state.lots.append(a_lot(f"p{i}", D(amount), at, promised=True, available_at=at + timedelta(days=1)))
        state.lots.append(a_lot(f"c{i}", D(amount), at))
    return state


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_balances_coarsen_exactly_when_a_bucket_loses_its_finest_exponent(order: tuple[int, ...]) -> None:
    """Converting or expiring lots in any order leaves running balances that read as the lots' sums do."""
    amounts = ["1.25", "2.5", "3", "4.125"]
    state = promised_state(amounts)
    fx = Effects(state, activity("TransactionAdd", "t1", "2024-03-05T10:00:00Z", bill_number="B1", amount="1"),
                 make_program(), None)
    for step, i in enumerate(order):
        if step % 2:
            fx.unpromise(state.lots[2 * i])
        else:
            fx.empty(state.lots[2 * i + 1])
        fx.check_balances()
        assert (str(fx.current), str(fx.promised)) == (str(state.current), str(state.promised))
    for lot in state.lots:
        if lot.remaining > ZERO:
            fx.empty(lot)
            fx.check_balances()
    assert (str(fx.current), str(fx.promised)) == ("0", "0")


def test_transitions_stay_immutable_and_sort_as_before() -> None:
    at = datetime(2024, 3, 1, tzinfo=UTC)
    lot = a_lot("a", D("1"), at)
    transition = lifecycle.Transition(at, lifecycle.EXPIRE, "a", lot)
    assert transition.days_before == 0
    assert transition.sort_key() == (at, lifecycle.EXPIRE, "a", 0)
    with pytest.raises(AttributeError):
        transition.at = at  # type: ignore[misc]


def test_acting_as_restores_the_activity_even_when_the_effects_fail() -> None:
    fx = Effects(new_state("c1", "default"), activity("TransactionAdd", "t1", "2024-03-05T10:00:00Z",
                                                      bill_number="B1", amount="1"), make_program(), None)
    real = fx.activity
    synthetic = activity("TransactionAdd", "t2", "2024-03-06T10:00:00Z", bill_number="B2", amount="1")
    with lifecycle.acting_as(fx, synthetic):
        assert fx.activity is synthetic
    assert fx.activity is real
    with pytest.raises(RuntimeError), lifecycle.acting_as(fx, synthetic):
        raise RuntimeError("boom")
    assert fx.activity is real
