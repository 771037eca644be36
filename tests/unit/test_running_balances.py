"""Running balances: the engine keeps the current and promised balances as running totals instead of summing
the lots on every ledger entry; they must always equal the lots' sums, to the scale ("0" vs "0.00")."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bench import workload
from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.state import CustomerState, new_state
from loyalty_stream.events.outputs import LedgerKind
from loyalty_stream.stream.processor import ActivityProcessor

from .conftest import activity, process_all
from .test_redeem import Customer, earn_rules, make_program

D = Decimal


pytestmark = pytest.mark.usefixtures("verify_running_balances")


def sums(state: CustomerState) -> tuple[str, str]:
    return str(state.current), str(state.promised)


def test_a_promised_bucket_emptied_by_conversion_reads_0_as_the_sum_of_no_lots_does() -> None:
    c = Customer(make_program(rule_sets=earn_rules("LATE")))
    c.buy("B1", "100", "2024-03-01T10:00:00+00:00")
    converted = c.buy("B2", "0", "2024-03-10T10:00:00+00:00")
    entry = converted.ledger[0]
    assert entry.kind == LedgerKind.CONVERT
    assert (str(entry.balance_after), str(entry.promised_after)) == ("10.00", "0")
    assert converted.balance_change is not None
    assert (str(converted.balance_change.current), str(converted.balance_change.promised)) == ("10.00", "0")
    assert sums(c.state) == ("10.00", "0")


def test_lots_emptied_by_expiry_read_0_as_their_sum_does() -> None:
    program = make_program(default_expiry="E1", expiry_conditions=[{"code": "E1", "unit": "days", "value": 1}])
    c = Customer(program)
    c.buy("B1", "100", "2024-03-01T10:00:00+00:00")
    expired = c.buy("B2", "0", "2024-03-05T10:00:00+00:00")
    assert [(e.kind, str(e.balance_after)) for e in expired.ledger] == [(LedgerKind.EXPIRE, "0")]
    assert sums(c.state) == ("0", "0")


def test_the_check_catches_a_balance_that_drifted_from_the_lots() -> None:
    program = make_program()
    state = apply(None, activity("TransactionAdd", "t1", "2024-03-01T10:00:00Z", bill_number="B1",
                                 amount="100"), program).state
    fx = Effects(state, activity("TransactionAdd", "t2", "2024-03-02T10:00:00Z", bill_number="B2", amount="1"),
                 program, None)
    fx.check_balances()
    state.lots[0].remaining -= D(1)  # changed behind the running total's back
    with pytest.raises(AssertionError, match="disagree"):
        fx.check_balances()


def test_every_entry_of_a_realistic_workload_agrees_with_the_lots() -> None:
    """Conversions, expiries, reminders, redemptions, returns, caps and dropped history (the bench program)."""
    registry = workload.load_registry()
    processor = ActivityProcessor(registry, clock=lambda: datetime(2030, 1, 1, tzinfo=UTC))
    store: dict[bytes, bytes] = {}
    kinds: set[LedgerKind] = set()
    for processed in process_all(processor, workload.generate(2500, 150, seed=21, days=240), store):
        assert processed.dead_letter is None or "unknown" in processed.dead_letter.reason
        if processed.outcome is not None:
            kinds.update(e.kind for e in processed.outcome.ledger)
            change = processed.outcome.balance_change
            if change is not None:
                assert (str(change.current), str(change.promised)) == sums(processed.outcome.state)
    assert {LedgerKind.PROMISE, LedgerKind.CONVERT, LedgerKind.EXPIRE, LedgerKind.REDEEM,
            LedgerKind.RETURN, LedgerKind.REVERSE} <= kinds


def test_balances_of_a_state_built_by_hand_are_read_from_its_lots() -> None:
    state = new_state("c1", "default")
    program = make_program()
    first = apply(state, activity("TransactionAdd", "t1", "2024-03-01T10:00:00Z", bill_number="B1",
                                  amount="100"), program, in_place=True).state
    first.lots.append(type(first.lots[0])("extra", D("5.00"), D("5.00"), False, first.lots[0].earned_at,
                                          None, None, "src"))
    outcome = apply(first, activity("TransactionAdd", "t2", "2024-03-02T10:00:00Z", bill_number="B2",
                                    amount="100"), program, in_place=True)
    assert outcome.ledger[0].balance_after == D("25.00") == outcome.state.current
