"""The outcome of applying one activity, and the accumulator handlers write it through.

Handlers never build ledger entries by hand: `Effects.credit/debit` assign the per-customer sequence number,
the stable id and the balances after, so every entry is consistent however it was produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from loyalty_stream.engine.ids import derive_id
from loyalty_stream.engine.rounding import round_points
from loyalty_stream.engine.state import ZERO, CustomerState, Lot
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.events.outputs import (
    BalanceChange,
    Bucket,
    Channel,
    CouponIssued,
    LedgerEntry,
    LedgerKind,
    Notification,
    RedemptionResult,
    SourceRef,
    TierChange,
)
from loyalty_stream.program.model import Program


@dataclass(slots=True)
class Outcome:
    """Everything one activity produced. `state` is the customer's new state (the input object, updated)."""

    state: CustomerState
    ledger: list[LedgerEntry] = field(default_factory=list)
    balance_change: BalanceChange | None = None
    notifications: list[Notification] = field(default_factory=list)
    redemption_result: RedemptionResult | None = None
    tier_changes: list[TierChange] = field(default_factory=list)
    coupons: list[CouponIssued] = field(default_factory=list)
    duplicate: bool = False
    rejected: str | None = None
    """Set when the activity is invalid for the program (e.g. unknown event name): a dead-letter reason."""
    skipped: list[str] = field(default_factory=list)
    """Awards a valid activity did not get, with the reason (e.g. a string custom field where a prorated
    condition needs an integer, a cap already exhausted); the activity itself is processed normally."""


class Effects:
    """Collects the outputs of one activity against one customer state."""

    __slots__ = ("activity", "current_before", "lifetime_before", "outcome", "program", "promised_before",
                 "scope", "source", "state")

    def __init__(self, state: CustomerState, activity: Envelope, program: Program, source: SourceRef | None) -> None:
        self.state = state
        self.activity = activity
        self.program = program
        self.source = source
        self.outcome = Outcome(state=state)
        self.current_before = state.current
        self.promised_before = state.promised
        self.lifetime_before = state.lifetime_earned
        self.scope: Any = None
        """The rule set being run (engine.caps.SetScope) while its actions execute; None otherwise."""

    # Arithmetic ---------------------------------------------------------------------------------------
    def round(self, value: Decimal) -> Decimal:
        rounding = self.program.rounding
        return round_points(value, rounding.decimals, rounding.strategy)

    @property
    def at(self) -> datetime:
        return self.activity.event_time

    # Ledger ---------------------------------------------------------------------------------------------
    def entry(
        self,
        *,
        kind: LedgerKind,
        bucket: Bucket,
        amount: Decimal,
        key: tuple[object, ...],
        at: datetime | None = None,
        scheduled: bool = False,
        lot: Lot | None = None,
        **details: Any,
    ) -> LedgerEntry:
        """Append a ledger entry for a change already applied to the state.

        `key` identifies the entry within its cause; scheduled entries (conversion, expiry) are keyed by the lot
        alone and carry no source offset, so the scheduler path and the lazy path produce identical entries.
        """
        state = self.state
        state.seq += 1
        cause = lot.source_event_id if scheduled and lot is not None else self.activity.event_id
        entry = LedgerEntry.model_construct(
            type="LedgerEntry",
            entry_id=derive_id("le", cause, kind.value, self.program.version, *key),
            seq=state.seq,
            customer_id=state.customer_id,
            program_id=state.program_id,
            program_version=self.program.version,
            kind=kind,
            bucket=bucket,
            amount=amount,
            desired_amount=details.pop("desired_amount", None),
            balance_after=state.current,
            promised_after=state.promised,
            lot_id=lot.lot_id if lot is not None else details.pop("lot_id", None),
            source_event_id=cause,
            source_type=details.pop("source_type", None) or type(self.activity).__name__,
            source=None if scheduled else self.source,
            condition_code=details.pop("condition_code", lot.condition_code if lot is not None else None),
            rule=details.pop("rule", None),
            line_item_id=details.pop("line_item_id", lot.line_item_id if lot is not None else None),
            bill_number=details.pop("bill_number", lot.bill_number if lot is not None else None),
            redemption_id=details.pop("redemption_id", None),
            available_at=lot.available_at if lot is not None else None,
            expires_at=lot.expires_at if lot is not None else None,
            occurred_at=at or self.at,
            reason=details.pop("reason", None),
            operator_id=details.pop("operator_id", None),
            shortfall=details.pop("shortfall", None),
        )
        if details:
            raise TypeError(f"unknown ledger details: {sorted(details)}")
        self.outcome.ledger.append(entry)
        return entry

    def credit(
        self,
        *,
        points: Decimal,
        key: tuple[object, ...],
        promised: bool = False,
        available_at: datetime | None = None,
        expires_at: datetime | None = None,
        origin: str = "earn",
        condition_code: str | None = None,
        rule: str | None = None,
        bill_number: str | None = None,
        line_item_id: str | None = None,
        expiry_code: str | None = None,
        rolling: bool = False,
        desired_amount: Decimal | None = None,
        kind: LedgerKind | None = None,
        reason: str | None = None,
        operator_id: str | None = None,
        counts_as_earned: bool = True,
        redemption_id: str | None = None,
    ) -> Lot:
        """Create a lot of `points` (already rounded) and its ledger entry; pays off debt first."""
        lot_id = derive_id("lot", self.activity.event_id, *key)
        lot = Lot(
            lot_id=lot_id, points=points, remaining=points, promised=promised, earned_at=self.at,
            available_at=available_at, expires_at=expires_at, source_event_id=self.activity.event_id,
            origin=origin, condition_code=condition_code, bill_number=bill_number, line_item_id=line_item_id,
            expiry_code=expiry_code, rolling=rolling,
        )
        self.state.lots.append(lot)
        if counts_as_earned:
            self.state.lifetime_earned += points
        if not promised:
            self.settle_debt(lot)
        self.entry(
            kind=kind or (LedgerKind.PROMISE if promised else LedgerKind.EARN),
            bucket=Bucket.PROMISED if promised else Bucket.CURRENT,
            amount=points, key=key, lot=lot, rule=rule, desired_amount=desired_amount, reason=reason,
            operator_id=operator_id, redemption_id=redemption_id,
        )
        return lot

    def settle_debt(self, lot: Lot) -> None:
        """A negative balance (debt) is paid from the next current points."""
        state = self.state
        if state.debt > ZERO and lot.remaining > ZERO:
            paid = min(state.debt, lot.remaining)
            lot.remaining -= paid
            state.debt -= paid

    # Other outputs ----------------------------------------------------------------------------------------
    def notify(self, channel: Channel | str, template: str, key: tuple[object, ...], **data: str) -> None:
        self.outcome.notifications.append(
            Notification.model_construct(
                type="Notification",
                notification_id=derive_id("nt", self.activity.event_id, template, *key),
                customer_id=self.state.customer_id,
                program_id=self.state.program_id,
                channel=Channel(channel),
                template=template,
                data=data,
                cause_event_id=self.activity.event_id,
                occurred_at=self.at,
            )
        )

    def coupon(self, series: str, rule: str | None, key: tuple[object, ...] = ()) -> None:
        """`key` tells apart coupons of one series from rules of the same name in different sets."""
        self.outcome.coupons.append(
            CouponIssued.model_construct(
                type="CouponIssued",
                coupon_id=derive_id("cp", self.activity.event_id, series, rule, *key),
                customer_id=self.state.customer_id,
                program_id=self.state.program_id,
                series=series,
                rule=rule,
                cause_event_id=self.activity.event_id,
                occurred_at=self.at,
            )
        )

    def change_tier(self, to_tier: str, reason: str) -> None:
        state = self.state
        if state.tier == to_tier:
            return
        change = TierChange.model_construct(
            type="TierChange",
            change_id=derive_id("tc", self.activity.event_id, to_tier),
            customer_id=state.customer_id,
            program_id=state.program_id,
            from_tier=state.tier,
            to_tier=to_tier,
            reason=reason,
            cause_event_id=self.activity.event_id,
            occurred_at=self.at,
        )
        state.tier = to_tier
        self.outcome.tier_changes.append(change)
        policy = self.program.tier_policy
        if policy.notify_channel and policy.notify_template:
            self.notify(policy.notify_channel, policy.notify_template, ("tier", to_tier), tier=to_tier)

    def finish(self) -> Outcome:
        """Attach the balance change when anything moved."""
        state = self.state
        current, promised = state.current, state.promised
        if (
            self.outcome.ledger
            or current != self.current_before
            or promised != self.promised_before
            or self.outcome.tier_changes
        ):
            self.outcome.balance_change = BalanceChange.model_construct(
                type="BalanceChange",
                change_id=derive_id("bc", self.activity.event_id),
                customer_id=state.customer_id,
                program_id=state.program_id,
                seq=state.seq,
                current=current,
                promised=promised,
                lifetime_earned=state.lifetime_earned,
                redeemed=state.redeemed,
                expired=state.expired,
                returned=state.returned,
                delta_current=current - self.current_before,
                delta_promised=promised - self.promised_before,
                tier=state.tier,
                cause_event_id=self.activity.event_id,
                cause_type=type(self.activity).__name__,
                occurred_at=self.at,
            )
        return self.outcome
