"""One human line per ledger entry, for every kind the engine writes (entries produced by the engine)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from loyalty_stream.engine.history import describe
from loyalty_stream.engine.state import new_state
from loyalty_stream.events.outputs import Bucket, LedgerEntry, LedgerKind

from .test_redeem import Customer, add_lot, earn_rules, make_program, redeem_rule_set

LONDON = ZoneInfo("Europe/London")


def lines(c: Customer) -> list[str]:
    return [describe(entry, LONDON) for entry in c.ledger]


def program(**extra: Any) -> Any:
    data: dict[str, Any] = {
        "timezone": "Europe/London", "default_expiry": "E30",
        "expiry_conditions": [{"code": "E30", "unit": "days", "value": 30}],
        "rule_sets": {**earn_rules("BASE"), "PointsRedemption": [redeem_rule_set(condition="R")]},
    }
    return make_program(**{**data, **extra})


def test_earn_redeem_reverse_return_adjust_expire() -> None:
    c = Customer(program())
    c.buy("B1", "1000", "2024-03-01T10:00:00+00:00")
    c.redeem("30", "2024-03-02T10:00:00+00:00", redemption_id="R-1", bill_number="B2")
    c.do("RedemptionReversal", "2024-03-03T10:00:00+00:00", redemption_id="R-1")
    c.redeem("80", "2024-03-04T10:00:00+00:00", redemption_id="R-2")
    c.do("TransactionReturn", "2024-03-05T10:00:00+00:00", bill_number="B1", amount="300")
    c.do("ManualAdjustment", "2024-03-06T10:00:00+00:00", direction="add", points="5", reason="sorry",
         operator_id="op-1")
    c.do("ManualAdjustment", "2024-03-06T11:00:00+00:00", direction="deduct", points="1", reason="typo",
         operator_id="op-1")
    c.do("ManualAdjustment", "2024-03-06T12:00:00+00:00", direction="deduct", points="9", reason="fraud",
         operator_id="op-2", clamp=True)
    c.buy("B3", "10", "2024-04-10T10:00:00+00:00")
    assert lines(c) == [
        "2024-03-01  +100 points earned on bill B1 (BASE, rule 'earn'), usable through 2024-03-31; "
        "balance 100",
        "2024-03-02  -30 points redeemed (redemption R-1 on bill B2, condition R) from points usable through "
        "2024-03-31; balance 70",
        "2024-03-03  +30 points given back: redemption R-1 reversed, original expiry 2024-03-31 kept; "
        "balance 100",
        "2024-03-04  -80 points redeemed (redemption R-2, condition R) from points usable through "
        "2024-03-31; balance 20",
        "2024-03-05  -20 points taken back: bill B1 returned; 10 had already been redeemed, not recovered "
        "(shortfall); balance 0",
        "2024-03-06  +5 points added by operator op-1: sorry, usable through 2024-04-05; balance 5",
        "2024-03-06  -1 point deducted by operator op-1: typo; balance 4",
        "2024-03-06  -4 points deducted by operator op-2: fraud (clamped: 9 requested, 4 available); "
        "balance 0",
        "2024-04-10  +1 point earned on bill B3 (BASE, rule 'earn'), usable through 2024-05-10; balance 1",
    ]


def test_promise_convert_cancel_and_expiry_after_reversal() -> None:
    c = Customer(program(rule_sets=earn_rules("LATE")))
    c.buy("B1", "200", "2024-03-01T10:00:00+00:00")
    c.buy("B2", "100", "2024-03-01T11:00:00+00:00")
    c.do("PointsUnlock", "2024-03-02T10:00:00+00:00", bill_number="B2")
    c.do("TransactionReturn", "2024-03-02T11:00:00+00:00", bill_number="B1", whole_bill=True)
    assert lines(c) == [
        "2024-03-01  +20 points promised on bill B1 (LATE, rule 'earn'), available from 2024-03-05; "
        "promised balance 20",
        "2024-03-01  +10 points promised on bill B2 (LATE, rule 'earn'), available from 2024-03-05; "
        "promised balance 30",
        "2024-03-02  +10 promised points became available from bill B2 (unlocked), usable through "
        "2024-03-31; balance 10",
        "2024-03-02  -20 promised points cancelled: bill B1 returned; promised balance 0",
    ]


def test_reissue_and_expiry_of_restored_points() -> None:
    state = new_state("c1", "default")
    add_lot(state, "old", "50", expires="2024-03-10T00:00:00+00:00")
    c = Customer(program(return_policy={"redeemed_points": "reissue", "reissue_expiry": "E30"}), state)
    c.buy("B1", "0", "2024-03-01T10:00:00+00:00")
    c.redeem("20", "2024-03-01T10:05:00+00:00", bill_number="B1", redemption_id="R-1")
    c.redeem("10", "2024-03-01T10:06:00+00:00", redemption_id="R-2")
    c.do("TransactionReturn", "2024-03-02T10:00:00+00:00", bill_number="B1", whole_bill=True)
    c.do("RedemptionReversal", "2024-03-20T10:00:00+00:00", redemption_id="R-2")
    assert lines(c)[2:] == [
        "2024-03-02  +20 points reissued for redemption R-1: bill B1 returned, usable through 2024-04-01; "
        "balance 40",
        "2024-03-10  -20 points expired; balance 20",
        "2024-03-20  +10 points given back: redemption R-2 reversed, original expiry 2024-03-09 kept; "
        "balance 30",
        "2024-03-20  -10 points expired: its original expiry (2024-03-09) had passed when redemption R-2 was "
        "reversed; balance 20",
    ]


def entry(**fields: Any) -> LedgerEntry:
    base: dict[str, Any] = dict(
        entry_id="le-1", seq=1, customer_id="c1", program_id="p", program_version=3, kind=LedgerKind.ADJUST,
        bucket=Bucket.CURRENT, amount=Decimal(0), balance_after=Decimal("12.50"), promised_after=Decimal(0),
        source_event_id="ev-9", source_type="ManualAdjustment",
        occurred_at=datetime.fromisoformat("2024-03-31T23:30:00+00:00"),
    )
    base.update(fields)
    return LedgerEntry(**base)


def test_dates_follow_the_zone_and_audit_names_the_source() -> None:
    line = entry(reason="nothing left", operator_id="op-1")
    assert describe(line) == "2024-03-31  0 points not deducted by operator op-1: nothing left; balance 12.5"
    assert describe(line, LONDON).startswith("2024-04-01  ")  # 00:30 BST
    assert describe(line, audit=True).endswith("[event ev-9 (ManualAdjustment), program v3, entry le-1]")


def test_an_earn_without_a_bill_names_its_activity() -> None:
    line = entry(kind=LedgerKind.EARN, amount=Decimal("100"), source_type="Registration",
                 condition_code="WELCOME", rule="welcome bonus")
    assert describe(line) == (
        "2024-03-31  +100 points earned for Registration (WELCOME, rule 'welcome bonus'); balance 12.5")
