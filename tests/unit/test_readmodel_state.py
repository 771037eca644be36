"""The read model's pure transitions, driven by the engine's own outputs: from the ledger alone it keeps the same
lots, expiry groups and balances as the engine, and redelivery or replay changes nothing."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from itertools import product
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_stream.engine.core import apply
from loyalty_stream.engine.effects import Outcome
from loyalty_stream.engine.expiry import expiry_date
from loyalty_stream.engine.state import ZERO, CustomerState
from loyalty_stream.events.codec import encode
from loyalty_stream.events.outputs import BalanceChange, LedgerEntry, LedgerKind, TierChange
from loyalty_stream.program.model import Program
from loyalty_stream.readmodel.state import (
    CustomerView,
    LotView,
    apply_balance_change,
    apply_ledger,
    apply_tier_change,
)

from .conftest import activity, program_from

START = datetime.fromisoformat("2024-01-01T09:00:00+00:00")


def make_program(shortfall: str = "take_available", redeemed: str = "reverse", delayed: bool = False,
                 decimals: int = 2, **extra: Any) -> Program:
    earn = "LATE" if delayed else "BASE"
    return program_from({
        "timezone": "Europe/London", "rounding": {"decimals": decimals}, "default_expiry": "E20",
        "tiers": [{"name": "bronze"}, {"name": "silver", "threshold": 300}],
        "earn_conditions": [
            {"code": "BASE", "allocation": {"type": "prorated", "percent": 10}, "expiry": "E20"},
            {"code": "LATE", "allocation": {"type": "prorated", "percent": 10}, "delay_days": 3, "expiry": "M1"},
        ],
        "expiry_conditions": [{"code": "E20", "unit": "days", "value": 20},
                              {"code": "M1", "unit": "months", "value": 1}],
        "return_policy": {"shortfall": shortfall, "redeemed_points": redeemed, "reissue_expiry": "E20"},
        "redeem_conditions": [{"code": "R", "min_points": 1}],
        "rule_sets": {
            "TransactionAdd": [{"name": "buy", "rules": [{"name": "earn", "when": "true",
                                                         "actions": [{"type": "allocate", "condition": earn}]}]}],
            "PointsRedemption": [{"name": "r", "rules": [{"name": "redeem", "when": "true",
                                                         "actions": [{"type": "redeem"}]}]}],
        },
        **extra,
    })


PROGRAMS = [make_program(*options) for options in product(("take_available", "allow_negative"),
                                                          ("reverse", "reissue", "keep"), (False, True))]
MOVING_EXPIRY = [{"code": "E20", "based_on": "rolling_event_date", "unit": "days", "value": 20},
                 {"code": "M1", "based_on": "membership_end"}]
"""Expiries that move after the credit: rolling (BASE, and reissues), and the membership end (LATE)."""
PROGRAMS += [make_program(shortfall, "reissue", delayed, expiry_conditions=MOVING_EXPIRY,
                          roll_expiry_on_zero_points=delayed)
             for shortfall, delayed in product(("take_available", "allow_negative"), (False, True))]


def wire(entry: LedgerEntry) -> LedgerEntry:
    """What the projection sees: the entry as published and read back."""
    return LedgerEntry.model_validate_json(encode(entry))


class Customer:
    """Drives the engine and the read model side by side."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.state: CustomerState | None = None
        self.view = CustomerView(program.id, "c1")
        self.at = START
        self.n = 0
        self.bills: list[str] = []
        self.redemptions: list[str] = []
        self.outcomes: list[Outcome] = []

    def do(self, kind: str, hours: int = 1, **payload: Any) -> Outcome:
        self.n += 1
        self.at += timedelta(hours=hours)
        if kind == "TransactionAdd":
            self.bills.append(payload["bill_number"])
        outcome = apply(self.state, activity(kind, f"e{self.n}", self.at.isoformat(), **payload), self.program)
        self.state = outcome.state
        self.outcomes.append(outcome)
        for entry in outcome.ledger:
            assert apply_ledger(self.view, wire(entry))
        if outcome.balance_change is not None:
            apply_balance_change(self.view, BalanceChange.model_validate_json(encode(outcome.balance_change)))
        return outcome

    def step(self, step: tuple[Any, ...]) -> None:
        kind, hours, a, b = step

        def pick(items: list[str]) -> str:
            return items[a % len(items)] if items else "none"

        if kind == "buy":
            number = f"B{self.n}"
            self.do("TransactionAdd", hours, bill_number=number, amount=str(a),
                    line_items=[{"item_id": "1", "sku": "S", "amount": str(a - a // 3)},
                                {"item_id": "2", "sku": "T", "amount": str(a // 3)}])
        elif kind == "redeem":
            rid = f"R{self.n}"
            self.redemptions.append(rid)
            bill = pick(self.bills) if b % 2 else None
            self.do("PointsRedemption", hours, points=str(1 + a % 90), redemption_id=rid, bill_number=bill)
        elif kind == "drain":  # spend everything, then a return charges debt under allow_negative
            assert self.state is not None
            if self.state.current > ZERO:
                rid = f"R{self.n}"
                self.redemptions.append(rid)
                bill = pick(self.bills) if b % 2 else None
                self.do("PointsRedemption", hours, points=str(self.state.current), redemption_id=rid, bill_number=bill)
            self.do("TransactionReturn", 1, bill_number=pick(self.bills), whole_bill=b % 3 != 1,
                    **({} if b % 3 != 1 else {"amount": str(1 + a)}))
        elif kind == "return":
            mode = b % 3
            line = {"whole_bill": True} if mode == 0 else (
                {"line_items": [{"item_id": str(1 + b % 2)}]} if mode == 1 else {"amount": str(1 + a)})
            self.do("TransactionReturn", hours, bill_number=pick(self.bills), **line)
        elif kind == "reverse":
            self.do("RedemptionReversal", hours, redemption_id=pick(self.redemptions))
        elif kind == "adjust":
            self.do("ManualAdjustment", hours, direction=("add", "deduct")[b % 2], points=str(1 + a % 200),
                    reason="r", operator_id="op", clamp=b % 3 == 0)
        elif kind == "member":  # a membership end from 10 days ago to 50 days ahead (moves M1 lots)
            self.do("CustomerUpdate", hours, membership_end=(self.at + timedelta(days=a % 60 - 10)).date().isoformat())
        else:
            self.do("PointsUnlock", hours, bill_number=pick(self.bills))

    def engine_groups(self) -> dict[date, Decimal]:
        assert self.state is not None
        groups: dict[date, Decimal] = defaultdict(lambda: ZERO)
        for lot in self.state.lots:
            if lot.expires_at is not None and lot.remaining > ZERO:
                groups[expiry_date(lot.expires_at, self.program.zone)] += lot.remaining
        return dict(sorted(groups.items()))

    def check(self) -> None:
        state, view = self.state, self.view
        assert state is not None
        engine_lots = {lot.lot_id: (lot.remaining, lot.promised, lot.expires_at)
                       for lot in state.lots if lot.remaining > ZERO}
        assert {k: (v.remaining, v.promised, v.expires_at) for k, v in view.lots.items()} == engine_lots
        assert view.debt == state.debt
        assert (view.current, view.promised) == (state.current, state.promised) == view.held()
        assert view.consistent()
        assert view.expiration_groups(self.program.zone) == self.engine_groups()
        assert view.seq == state.seq
        assert (view.lifetime_earned, view.redeemed, view.expired, view.returned) == (
            state.lifetime_earned, state.redeemed, state.expired, state.returned) or view.change_seq is None


amounts = st.integers(min_value=0, max_value=3000)
hours = st.one_of(st.integers(-20, 48), st.integers(48, 24 * 25))
steps = st.tuples(st.sampled_from(["buy", "buy", "redeem", "drain", "return", "return", "reverse", "adjust",
                                   "unlock", "member"]),
                  hours, amounts, st.integers(0, 30))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PROGRAMS), st.lists(steps, min_size=1, max_size=30))
def test_the_ledger_alone_reproduces_lots_debt_and_expiry_groups(program: Program,
                                                                 sequence: list[tuple[Any, ...]]) -> None:
    customer = Customer(program)
    customer.do("TransactionAdd", 0, bill_number="B0", amount="1500")
    for step in sequence:
        customer.step(step)
        customer.check()


def test_debt_from_a_return_is_paid_by_the_next_credit_before_its_lot_keeps_anything() -> None:
    customer = Customer(make_program("allow_negative", "keep", decimals=0))
    customer.do("TransactionAdd", bill_number="B1", amount="1000")  # 100 points, expire in 20 days
    customer.do("PointsRedemption", points="90", redemption_id="R1")
    customer.do("TransactionReturn", bill_number="B1", whole_bill=True)  # claims 100: 10 held, 90 as debt
    assert (customer.view.debt, customer.view.current) == (Decimal(90), Decimal(-90))
    customer.do("TransactionAdd", 24 * 5, bill_number="B2", amount="1200")  # 120 points: 90 pay the debt
    customer.check()
    (lot,) = customer.view.lots.values()
    assert (lot.remaining, customer.view.debt) == (Decimal(30), ZERO)
    assert sum(customer.view.expiration_groups().values()) == Decimal(30)


def test_redelivered_and_replayed_entries_change_nothing() -> None:
    customer = Customer(make_program(delayed=True))
    customer.do("TransactionAdd", bill_number="B1", amount="500")
    customer.do("TransactionAdd", 24 * 5, bill_number="B2", amount="300")  # converts B1's promise first
    customer.do("PointsRedemption", points="20", redemption_id="R1")
    before = (customer.view.to_hash(), {k: v.to_json() for k, v in customer.view.lots.items()})
    entries = [wire(e) for outcome in customer.outcomes for e in outcome.ledger]
    customer.view.pending.history.clear()
    for entry in [*entries, *entries[-2:], *entries]:
        assert not apply_ledger(customer.view, entry)
    assert customer.view.pending.history == []
    assert (customer.view.to_hash(), {k: v.to_json() for k, v in customer.view.lots.items()}) == before


def test_a_view_survives_its_redis_form() -> None:
    customer = Customer(make_program(delayed=True))
    customer.do("TransactionAdd", bill_number="B1", amount="500")
    view = customer.view
    lots = {k: v.to_json().decode() for k, v in view.lots.items()}
    again = CustomerView.from_redis(view.program_id, view.customer_id, view.to_hash(), lots)
    assert again == view
    (promised,) = again.promised_groups()
    assert promised[1:] == ("B1", Decimal(50))
    assert LotView.from_json(next(iter(lots.values()))).promised


def _change(seq: int, current: str, tier: str | None, change_id: str = "bc") -> BalanceChange:
    return BalanceChange(change_id=change_id, customer_id="c1", program_id="p", seq=seq, current=Decimal(current),
                         promised=ZERO, lifetime_earned=Decimal(current), redeemed=ZERO, expired=ZERO,
                         returned=ZERO, delta_current=ZERO, delta_promised=ZERO, tier=tier, cause_event_id="e",
                         cause_type="TransactionAdd", occurred_at=START)


def test_balance_changes_apply_in_seq_order_and_a_tier_only_change_of_the_same_seq_wins() -> None:
    view = CustomerView("p", "c1")
    assert apply_balance_change(view, _change(3, "30", "bronze"))
    assert apply_balance_change(view, _change(3, "30", "silver"))  # a tier change moves no entry: same seq
    assert not apply_balance_change(view, _change(2, "20", "bronze"))  # late redelivery of an older one
    assert (view.current, view.tier, view.change_seq) == (Decimal(30), "silver", 3)


def test_tier_changes_set_the_tier_only_while_no_balance_change_is_known() -> None:
    view = CustomerView("p", "c1")
    change = TierChange(change_id="t1", customer_id="c1", program_id="p", from_tier=None, to_tier="gold",
                        reason="r", cause_event_id="e", occurred_at=START)
    apply_tier_change(view, change)
    assert view.tier == "gold" and len(view.pending.tier_changes) == 1
    apply_balance_change(view, _change(1, "5", "silver"))
    apply_tier_change(view, change)
    assert view.tier == "silver"


def test_a_rolled_lot_moves_to_its_new_group_at_once_and_a_redelivery_changes_nothing() -> None:
    program = make_program(decimals=0, expiry_conditions=MOVING_EXPIRY)
    customer = Customer(program)
    customer.do("TransactionAdd", bill_number="B1", amount="500")  # 50 points, rolling 20 days: through 21 Jan
    assert customer.view.expiration_groups(program.zone) == {date(2024, 1, 21): Decimal(50)}
    rolled = customer.do("TransactionAdd", 24 * 10, bill_number="B2", amount="100")  # re-dates B1's lot
    customer.check()
    assert customer.view.expiration_groups(program.zone) == {date(2024, 1, 31): Decimal(60)}
    [redate] = [wire(e) for e in rolled.ledger if e.kind is LedgerKind.REDATE]
    assert redate.lot_id in customer.view.pending.lots
    _seq, entry_id, item = customer.view.pending.history[-1]
    assert entry_id == redate.entry_id
    assert orjson.loads(item)["text"] == ("2024-01-11  expiry moved (rolling expiry): points from bill B1 (BASE) "
                                          "now usable through 2024-01-31; balance 60")
    before = {k: v.to_json() for k, v in customer.view.lots.items()}
    assert not apply_ledger(customer.view, redate)  # redelivered
    assert {k: v.to_json() for k, v in customer.view.lots.items()} == before


def test_a_redate_of_a_lot_the_view_does_not_hold_changes_no_lot() -> None:
    customer = Customer(make_program(decimals=0, expiry_conditions=MOVING_EXPIRY))
    customer.do("TransactionAdd", bill_number="B1", amount="500")
    [earn] = [wire(e) for e in customer.outcomes[0].ledger]
    moved = earn.model_copy(update={"seq": earn.seq + 1, "entry_id": "le-x", "kind": LedgerKind.REDATE,
                                    "amount": Decimal(0), "lot_id": "lot-gone", "expires_at": None})
    assert apply_ledger(customer.view, moved)
    assert set(customer.view.lots) == {earn.lot_id} and "lot-gone" not in customer.view.pending.lots


def test_a_membership_change_moves_promised_points_between_groups() -> None:
    program = make_program(decimals=0, delayed=True, expiry_conditions=MOVING_EXPIRY)
    customer = Customer(program)
    customer.do("TransactionAdd", bill_number="B1", amount="500")  # 50 promised points, no membership: no expiry
    assert customer.view.expiration_groups(program.zone) == {}
    customer.do("CustomerUpdate", 1, membership_end="2024-06-30")
    customer.check()
    assert customer.view.expiration_groups(program.zone) == {date(2024, 6, 30): Decimal(50)}
    customer.do("CustomerUpdate", 1, membership_end="2024-12-31")
    customer.check()
    assert customer.view.expiration_groups(program.zone) == {date(2024, 12, 31): Decimal(50)}
