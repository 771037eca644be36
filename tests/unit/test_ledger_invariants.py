"""Property tests over random sequences of earn / redeem / reverse / return / adjust / unlock at varied times
(late events included), under every return policy: the ledger always reconciles with the state."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import product
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_stream.engine.core import apply
from loyalty_stream.engine.state import ZERO, CustomerState, state_from_dict, state_to_dict
from loyalty_stream.events.outputs import Bucket, LedgerEntry, LedgerKind, RedemptionStatus
from loyalty_stream.program.model import Program

from .conftest import activity
from .test_redeem import earn_rules, make_program

START = datetime.fromisoformat("2024-01-01T09:00:00+00:00")


pytestmark = pytest.mark.usefixtures("verify_running_balances")


def _program(shortfall: str, redeemed: str, delayed: bool, decimals: int) -> Program:
    return make_program(
        timezone="Europe/London", rounding={"decimals": decimals},
        default_expiry="E20", expiry_conditions=[{"code": "E20", "unit": "days", "value": 20}],
        return_policy={"shortfall": shortfall, "redeemed_points": redeemed, "reissue_expiry": "E20"},
        redeem_conditions=[{"code": "R", "min_points": 1, "limits": {"per_day": 300}}],
        rule_sets={**earn_rules("LATE" if delayed else "BASE"),
                   "PointsRedemption": [{"name": "r", "rules": [{"name": "redeem", "when": "true",
                                                                 "actions": [{"type": "redeem"}]}]}]},
    )


PROGRAMS = [_program(*options) for options in product(("take_available", "allow_negative"),
                                                       ("reverse", "reissue", "keep"), (False, True), (0, 2))]

hours = st.one_of(st.integers(min_value=-30, max_value=48), st.integers(min_value=48, max_value=24 * 25))
amounts = st.integers(min_value=0, max_value=3000)
buys = st.tuples(st.just("buy"), hours, amounts, st.lists(st.tuples(amounts, st.integers(1, 4)), max_size=3))
redeems = st.tuples(st.just("redeem"), hours, st.integers(1, 60), st.sampled_from(["", "", "0.5"]),
                    st.none() | st.integers(0, 20))
steps = st.one_of(
    buys, buys, redeems, redeems,
    st.tuples(st.just("reverse"), hours, st.integers(0, 20), st.integers(0, 6).map(lambda n: n == 0)),
    st.tuples(st.just("return"), hours, st.integers(0, 20), st.sampled_from(["whole", "items", "amount"]),
              st.integers(0, 5), st.none() | st.integers(1, 3000)),
    st.tuples(st.just("adjust"), hours, st.sampled_from(["add", "deduct"]), st.integers(1, 500),
              st.booleans()),
    st.tuples(st.just("unlock"), hours, st.integers(0, 20)),
)


class Run:
    def __init__(self, program: Program) -> None:
        self.program = program
        self.state: CustomerState | None = None
        self.at = START
        self.ledger: list[LedgerEntry] = []
        self.bills: list[tuple[str, list[str]]] = []
        self.redemption_ids: list[str] = []
        self.n = 0

    def pick(self, items: list[Any], index: int | None) -> Any:
        return None if index is None or not items else items[index % len(items)]

    def payload(self, step: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
        kind = step[0]
        if kind == "buy":
            _, _, amount, lines = step
            number = f"B{self.n}"
            items = [{"item_id": f"I{i}", "sku": "S", "amount": str(a), "quantity": q}
                     for i, (a, q) in enumerate(lines)]
            self.bills.append((number, [i["item_id"] for i in items]))
            total = sum((a for a, _ in lines), 0) if lines else amount
            return "TransactionAdd", {"bill_number": number, "amount": str(total), "line_items": items}
        if kind == "redeem":
            _, _, points, fraction, bill = step
            rid = f"R{self.n}"
            chosen = self.pick(self.bills, bill)
            return "PointsRedemption", {"points": f"{points}{fraction and '.5'}", "redemption_id": rid,
                                        "bill_number": None if chosen is None else chosen[0]}
        if kind == "reverse":
            _, _, index, unknown = step
            rid = "nope" if unknown or not self.redemption_ids else self.pick(self.redemption_ids, index)
            return "RedemptionReversal", {"redemption_id": rid}
        if kind == "return":
            _, _, index, mode, item, amount = step
            number, items = self.pick(self.bills, index) or ("B-none", [])
            if mode == "whole" or (mode == "items" and not items):
                return "TransactionReturn", {"bill_number": number, "whole_bill": True}
            if mode == "items":
                line: dict[str, Any] = {"item_id": self.pick(items, item)}
                if item % 3 == 1:
                    line["quantity"] = item
                elif item % 3 == 2 and amount is not None:
                    line["amount"] = str(amount)
                return "TransactionReturn", {"bill_number": number, "line_items": [line]}
            return "TransactionReturn", {"bill_number": number, "amount": str(amount or 1)}
        if kind == "adjust":
            _, _, direction, points, clamp = step
            return "ManualAdjustment", {"direction": direction, "points": str(points), "reason": "r",
                                        "operator_id": "op", "clamp": clamp}
        _, _, index = step
        chosen = self.pick(self.bills, index)
        return "PointsUnlock", {"bill_number": "B-none" if chosen is None else chosen[0]}

    def apply(self, step: tuple[Any, ...]) -> None:
        self.n += 1
        self.at += timedelta(hours=step[1])
        kind, payload = self.payload(step)
        event = activity(kind, f"ev{self.n}", self.at.isoformat(), **payload)
        outcome = apply(self.state, event, self.program)  # never raises
        self.state = outcome.state
        self.ledger.extend(outcome.ledger)
        if kind == "PointsRedemption":
            result = outcome.redemption_result
            assert result is not None and result.request_event_id == event.event_id
            self.redemption_ids.append(result.redemption_id)
            redeemed = [e for e in outcome.ledger if e.kind == LedgerKind.REDEEM]
            if result.status == RedemptionStatus.ACCEPTED:
                assert sum((lot.points for lot in result.lots), ZERO) == result.points_debited > 0
                assert sum((e.amount for e in redeemed), ZERO) == -result.points_debited
            else:
                assert result.reason_code and redeemed == [] and result.points_debited == 0


def check(run: Run) -> None:
    state, program = run.state, run.program
    assert state is not None
    negative_allowed = program.return_policy.shortfall == "allow_negative"
    # Every entry's balances are the running sums of the entries before it.
    current = promised = ZERO
    for seq, entry in enumerate(run.ledger, start=1):
        assert entry.seq == seq
        if entry.kind == LedgerKind.CONVERT:
            current, promised = current + entry.amount, promised - entry.amount
        elif entry.bucket == Bucket.CURRENT:
            current += entry.amount
        else:
            promised += entry.amount
        assert (entry.balance_after, entry.promised_after) == (current, promised), entry
    assert len({e.entry_id for e in run.ledger}) == len(run.ledger)
    # Balances are the lots.
    held = sum((lot.remaining for lot in state.lots if not lot.promised), ZERO)
    assert state.current == current == held - state.debt
    assert state.promised == promised
    assert state.debt >= 0
    assert all(ZERO <= lot.remaining <= lot.points for lot in state.lots)
    if negative_allowed:
        assert state.debt == 0 or not any(lot.spendable for lot in state.lots)
    else:
        assert state.debt == 0 and state.current >= 0
        # With no debt to settle, every lot's remainder is exactly what its entries say.
        for lot in state.lots:
            moves = sum((e.amount for e in run.ledger
                         if e.lot_id == lot.lot_id and e.kind != LedgerKind.CONVERT), ZERO)
            assert moves == lot.remaining, lot
    # Lifetime points are the credits that count as earned, less what returns claimed back.
    earned = ZERO
    for entry in run.ledger:
        if entry.kind in (LedgerKind.EARN, LedgerKind.PROMISE) or (entry.kind == LedgerKind.ADJUST
                                                                   and entry.amount > 0):
            earned += entry.amount
        elif entry.kind == LedgerKind.RETURN:
            lot = state.lot(entry.lot_id or "")
            if lot is not None and lot.bill_number == entry.bill_number and lot.origin == "earn":
                earned += entry.desired_amount if entry.desired_amount is not None else entry.amount
    assert state.lifetime_earned == earned
    # Every redemption is backed by lot consumptions and REDEEM entries summing to it.
    for rid, redemption in state.redemptions.items():
        assert sum((c.points for c in redemption.consumed), ZERO) == redemption.points
        assert sum((e.amount for e in run.ledger if e.kind == LedgerKind.REDEEM and e.redemption_id == rid),
                   ZERO) == -redemption.points
    assert state.redeemed == sum((r.points for r in state.redemptions.values() if not r.reversed), ZERO)
    assert state_from_dict(state_to_dict(state)) == state


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PROGRAMS), st.lists(steps, min_size=1, max_size=30))
def test_ledger_reconciles_after_any_sequence(program: Program, sequence: list[tuple[Any, ...]]) -> None:
    run = Run(program)
    run.apply(("buy", 0, 1500, [(1000, 2), (500, 1)]))
    for step in sequence:
        run.apply(step)
        check(run)


def test_a_long_busy_history_reconciles() -> None:
    """A deterministic sequence that goes through every path at least once (a smoke test for the above)."""
    for program in PROGRAMS:
        run = Run(program)
        for i in range(60):
            k = i // 6  # each round of six steps varies its options, so every variant runs
            run.apply([("buy", 20, 1000 + i, [(600, 2), (400 + i, 1)]),
                       ("redeem", 1, 70, "0.5" if k % 2 else "", k),
                       ("return", 3, k, ("whole", "items", "amount")[k % 3], k, 300),
                       ("reverse", 2, k, k % 5 == 0),
                       ("adjust", 5, ("add", "deduct")[k % 2], 40, k % 4 == 1),
                       ("unlock", 1, k)][i % 6])
            check(run)
        run.apply(("buy", 24 * 25, 10, []))  # past every expiry
        check(run)
        kinds = {e.kind for e in run.ledger}
        delayed = program.rule_sets["TransactionAdd"][0].rules[0].actions[0].condition == "LATE"
        expected = {LedgerKind.REDEEM, LedgerKind.RETURN, LedgerKind.REVERSE, LedgerKind.ADJUST, LedgerKind.EXPIRE}
        expected |= {LedgerKind.PROMISE, LedgerKind.CONVERT} if delayed else {LedgerKind.EARN}
        if program.return_policy.redeemed_points == "reissue":
            expected.add(LedgerKind.REISSUE)
        assert expected <= kinds, expected - kinds
        assert {e.source_type for e in run.ledger} >= {"TransactionAdd", "PointsRedemption", "TransactionReturn",
                                                       "RedemptionReversal", "ManualAdjustment"}
