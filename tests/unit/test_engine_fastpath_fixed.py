"""Fast paths of the engine's fixed per-activity cost give exactly what the plain computation gives.

`Effects` looks the program's facts up once and rounds with a `Rounder` built once per program; ledger entries
and balance changes are filled into a copy of a full field dict instead of a literal; retention's prune builds
the set of every kept bill's lots only when a redemption decision needs it.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest

from bench import workload
from loyalty_stream.engine import effects as effects_module
from loyalty_stream.engine import retention
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.expiry import local_date
from loyalty_stream.engine.facts import facts
from loyalty_stream.engine.rounding import _DECIMAL_MODES, RoundingStrategy, quantum, round_points, rounder
from loyalty_stream.engine.state import ZERO, CustomerState, copy_state, new_state, state_from_dict, state_to_dict
from loyalty_stream.engine.times import fixed
from loyalty_stream.events.activities import activity_adapter
from loyalty_stream.events.outputs import BalanceChange, Bucket, Channel, LedgerEntry, LedgerKind
from loyalty_stream.program.model import Program

from .conftest import activity
from .test_redeem import Customer, make_program

D = Decimal

VALUES = [D(v) for v in ("0", "1", "-1", "25.8751", "25.8651", "-25.8751", "50.3458", "0.005", "0.0049", "0.015",
                         "-0.015", "2.5", "3.5", "-2.5", "99.9999", "123456.78951", "1E+3", "7.12345678901234567")]


def plain_round(value: Decimal, decimals: int, strategy: RoundingStrategy) -> Decimal:
    """The document's rounding written out (see engine.rounding): half-down / half-even look at the next digit."""
    if strategy in (RoundingStrategy.HALF_DOWN, RoundingStrategy.HALF_EVEN):
        value = value.quantize(Decimal(1).scaleb(-(decimals + 1)), rounding=ROUND_DOWN)
    return value.quantize(Decimal(1).scaleb(-decimals), rounding=_DECIMAL_MODES[strategy])


@pytest.mark.parametrize(("decimals", "strategy"), list(itertools.product(range(4), RoundingStrategy)))
def test_rounder_matches_plain_rounding(decimals: int, strategy: RoundingStrategy) -> None:
    fast = rounder(decimals, strategy)
    for value in VALUES:
        expected = plain_round(value, decimals, strategy)
        for got in (fast.round(value), round_points(value, decimals, strategy)):
            assert str(got) == str(expected), (value, decimals, strategy)
    assert (fast.truncate_to is not None) == (strategy in (RoundingStrategy.HALF_DOWN, RoundingStrategy.HALF_EVEN))
    assert fast.quantum == quantum(decimals)


def test_rounder_refuses_what_round_points_refused() -> None:
    for decimals in (-1, 4):
        with pytest.raises(ValueError, match="decimals must be 0-3"):
            rounder(decimals, RoundingStrategy.HALF_UP)
        with pytest.raises(ValueError, match="decimals must be 0-3"):
            round_points(D(1), decimals)


@pytest.mark.parametrize("strategy", list(RoundingStrategy))
def test_effects_round_uses_the_programs_rounding(strategy: RoundingStrategy) -> None:
    program = make_program(rounding={"decimals": 1, "strategy": strategy.value})
    event = activity("TransactionAdd", "t1", "2024-10-01T10:00:00+00:00", bill_number="B1", amount="10")
    fx = Effects(new_state("c1", "default"), event, program, None)
    assert fx.known is facts(program)
    for value in VALUES:
        assert str(fx.round(value)) == str(round_points(value, 1, strategy))


def test_effects_facts_follow_a_copied_program() -> None:
    """A copy shares `compiled` but gets its own facts (its rounding may differ)."""
    program = make_program()
    facts(program)
    copy = program.model_copy(update={"rounding": program.rounding.model_copy(update={"decimals": 0})})
    event = activity("TransactionAdd", "t1", "2024-10-01T10:00:00+00:00", bill_number="B1", amount="10")
    fx = Effects(new_state("c1", "default"), event, copy, None)
    assert fx.known.program is copy
    assert str(fx.round(D("2.5"))) == "3"


# Ledger entries and balance changes --------------------------------------------------------------------------
def test_templates_name_every_field_in_order() -> None:
    for template, contract in ((effects_module._ENTRY, LedgerEntry), (effects_module._BALANCE_CHANGE, BalanceChange)):
        assert list(template) == list(contract.model_fields)
        assert template["type"] == contract.__name__
        assert all(value is None for name, value in template.items() if name != "type")


def _outcomes() -> list[Any]:
    program = make_program()
    state = None
    outcomes = []
    for kind, when, payload in [
        ("TransactionAdd", "2024-10-01T10:00:00+00:00", {"bill_number": "B1", "amount": "120.50"}),
        ("PointsRedemption", "2024-10-02T10:00:00+00:00", {"points": "5"}),
        ("TransactionAdd", "2024-10-03T10:00:00+00:00", {"bill_number": "B2", "amount": "7"}),
    ]:
        outcome = apply(state, activity(kind, f"e{len(outcomes)}", when, **payload), program)
        state = outcome.state
        outcomes.append(outcome)
    return outcomes


def test_entries_and_balance_changes_validate_as_built_by_hand() -> None:
    """Every field is set (a field left at the template's None would fail validation or differ), and the
    result equals and serialises exactly as the validated model."""
    outcomes = _outcomes()
    entries = [entry for outcome in outcomes for entry in outcome.ledger]
    changes = [outcome.balance_change for outcome in outcomes]
    assert entries and all(change is not None for change in changes)
    for built in [*entries, *changes]:
        assert built is not None
        validated = type(built).model_validate(built.model_dump())
        assert validated == built
        assert validated.model_dump_json() == built.model_dump_json()
        assert list(built.__dict__) == list(type(built).model_fields)
    # Each instance has its own field dict (the template is copied, never shared or changed).
    assert len({id(entry.__dict__) for entry in entries}) == len(entries)
    assert all(value is None for name, value in effects_module._ENTRY.items() if name != "type")


def test_entry_fields_left_none_match_a_full_fill() -> None:
    """`entry` leaves the template's None where a value is None: each entry's fields equal setting all of them,
    and the enum constants are the very members."""
    assert effects_module.EARN is LedgerKind.EARN and effects_module.PROMISE is LedgerKind.PROMISE
    assert effects_module.CURRENT is Bucket.CURRENT and effects_module.PROMISED is Bucket.PROMISED
    for entry in [entry for outcome in _outcomes() for entry in outcome.ledger]:
        full = dict(entry.__dict__)
        assert LedgerEntry.model_construct(**full).__dict__ == entry.__dict__
        assert entry.model_dump_json() == LedgerEntry.model_validate(full).model_dump_json()


@pytest.mark.parametrize("channel", [*Channel, *(c.value for c in Channel), "fax"])
def test_notification_channel_is_the_enum_lookup(channel: Any) -> None:
    """`notify` takes the channel from a table where it can; `Channel(channel)` gives the same member, and an
    unknown channel fails the same way."""
    program = make_program()
    event = activity("TransactionAdd", "t1", "2024-10-01T10:00:00+00:00", bill_number="B1", amount="10")
    fx = Effects(new_state("c1", "default"), event, program, None)
    try:
        expected = Channel(channel)
    except ValueError as error:
        with pytest.raises(ValueError, match=str(error)):
            fx.notify(channel, "t", ("k",), {})
        return
    fx.notify(channel, "t", ("k",), {"a": "1"})
    fx.notify(expected, "t", ("k2",), {"a": "1"})
    first, second = fx.outcome.notifications
    assert first.channel is expected and second.channel is expected
    assert first.data == second.data == {"a": "1"}


# Retention prune -------------------------------------------------------------------------------------------
def plain_prune(fx: Effects, now: datetime) -> None:
    """`retention.prune` as it was: the set of every kept bill's lots built whenever anything is looked at."""
    state = fx.state
    known = fx.known
    bills = retention.raw(state.bills)
    kept_bills: dict[str, str] = {}
    if known.return_window is not None:
        horizon = now - known.return_window
        for number, bill in list(bills.items()):
            if retention.time_of(bill, 1, "event_time") <= horizon:
                del state.bills[number]
            else:
                kept_bills[number] = bill[0] if type(bill) is list else bill.event_id
    else:
        kept_bills = {number: bill[0] if type(bill) is list else bill.event_id for number, bill in bills.items()}
    empty = [lot for lot in state.lots if lot.remaining <= ZERO]
    redemptions = retention.raw(state.redemptions)
    if not empty and not redemptions:
        return
    bill_lots = {
        lot.lot_id for lot in state.lots
        if lot.origin == "earn" and lot.bill_number is not None
        and kept_bills.get(lot.bill_number) == lot.source_event_id
    }
    needed = set(bill_lots)
    keep = known.redemption_keep
    horizon_r = None if keep is None else now - keep
    for rid, item in list(redemptions.items()):
        if type(item) is list:
            bill_number, consumed = item[3], [c[0] for c in item[4]]
        else:
            bill_number, consumed = item.bill_number, [c.lot_id for c in item.consumed]
        if (
            horizon_r is not None and retention.time_of(item, 1, "at") <= horizon_r
            and bill_number not in kept_bills and not any(lot_id in bill_lots for lot_id in consumed)
        ):
            del state.redemptions[rid]
        else:
            needed.update(consumed)
    dropped = [lot for lot in empty if lot.lot_id not in needed]
    if dropped:
        fx.forget(dropped)
        state.lots = [lot for lot in state.lots if lot.remaining > ZERO or lot.lot_id in needed]


def _pruned(prune: Any, state: CustomerState, event: Any, program: Program, now: datetime,
            decoded: bool) -> tuple[dict[str, Any], str, str]:
    copy = state_from_dict(state_to_dict(state)) if decoded else copy_state(state)
    fx = Effects(copy, event, program, None)
    prune(fx, now)
    return state_to_dict(copy), str(fx.current), str(fx.promised)


def test_prune_drops_and_keeps_exactly_what_it_did() -> None:
    """Over the benchmark's customers at many points in time (bills, redemptions and empty lots past and within
    their windows, redemptions of dropped and of kept bills), with decoded (row) and object bills."""
    registry = workload.load_registry()
    program = registry.get(workload.PROGRAM_ID)
    states: dict[str, CustomerState] = {}
    compared = dropped = 0
    for record in workload.generate(activities=500, customers=25, seed=5):
        event = activity_adapter.validate_json(record.value or b"")
        state = states.get(event.customer_id)
        if state is not None and (state.lots or state.redemptions):
            for days in (0, 91, 200):
                now = fixed(event.event_time) + timedelta(days=days)
                for decoded in (False, True):
                    expected = _pruned(plain_prune, state, event, program, now, decoded)
                    assert _pruned(retention.prune, state, event, program, now, decoded) == expected
                    compared += 1
                    dropped += len(expected[0]["lots"]) < len(state.lots)
        states[event.customer_id] = apply(state, event, program).state
    assert compared > 400 and dropped > 40, (compared, dropped)


def test_prune_keeps_a_redemption_past_its_window_that_spent_a_kept_bills_points() -> None:
    """The case that needs the set of kept bills' lots: a redemption past its reversal window, with no bill of
    its own, that consumed a lot of a bill still in its (longer) return window; and once that bill is gone."""
    program = make_program(retention={"return_window_days": 30, "reversal_window_days": 10})
    customer = Customer(program)
    customer.buy("B1", "100", "2024-10-01T10:00:00+00:00")
    customer.buy("B2", "50", "2024-10-01T11:00:00+00:00")
    customer.redeem("12", "2024-10-02T10:00:00+00:00", redemption_id="R-1")
    customer.redeem("3", "2024-10-02T11:00:00+00:00", redemption_id="R-2")
    state = customer.state
    event = activity("TransactionAdd", "t9", "2024-10-03T10:00:00+00:00", bill_number="B9", amount="1")
    kept = dropped = 0
    for day in (3, 12, 20, 31, 32, 60):
        now = fixed(datetime(2024, 10, 1, 12, tzinfo=UTC)) + timedelta(days=day - 1)
        for decoded in (False, True):
            expected = _pruned(plain_prune, state, event, program, now, decoded)
            assert _pruned(retention.prune, state, event, program, now, decoded) == expected
            kept += "R-1" in expected[0]["redemptions"]
            dropped += "R-1" not in expected[0]["redemptions"]
    assert kept and dropped


# Retention due -------------------------------------------------------------------------------------------
def plain_due(fx: Effects) -> bool:
    known = fx.known
    if known.return_window is None and known.redemption_keep is None:
        return False
    last = fx.state.last_event_time
    if last is None or fx.time <= last:
        return False
    return local_date(fx.time, known.zone) != local_date(last, known.zone)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "Pacific/Kiritimati", "Pacific/Pago_Pago",
                                  "America/New_York", "Asia/Manila"])
def test_retention_due_matches_the_local_dates(zone: str) -> None:
    """Gaps just under, at and past the shortcut's bound, across DST changes and an old local mean time (Manila's
    LMT was almost 16 hours behind UTC), with times written in offsets other than the zone's."""
    program = make_program(timezone=zone, retention={"return_window_days": 30, "reversal_window_days": 10})
    offsets = [timezone(timedelta(hours=h)) for h in (-11, 0, 5.5, 14)]
    starts = [datetime(2024, 3, 9, 23, 30, tzinfo=UTC), datetime(2024, 11, 2, 1, tzinfo=UTC),
              datetime(1844, 12, 29, 3, tzinfo=UTC), datetime(2024, 6, 30, 12, tzinfo=UTC),
              datetime(2024, 6, 30, 0, 30, tzinfo=UTC), datetime(2024, 6, 29, 19, tzinfo=UTC)]  # 00:30 UTC, IST
    shortcut = 0
    for start, gap_hours, written in itertools.product(starts, (0, 1, 23, 25, 47, 71, 72, 73, 97), offsets):
        state = new_state("c1", "default")
        state.last_event_time = fixed(start.astimezone(offsets[-1 - offsets.index(written)]))
        when = (start + timedelta(hours=gap_hours)).astimezone(written)
        fx = Effects(state, activity("TransactionAdd", "t1", when.isoformat(), bill_number="B1", amount="1"),
                     program, None)
        assert retention.due(fx) == plain_due(fx), (start, gap_hours, written)
        shortcut += gap_hours >= 72
    assert shortcut
