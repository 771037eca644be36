"""Messages the engine emits: ledger entries, balance changes, notifications, redemption results and more.

Every output id is derived from the input that caused it, so a downstream consumer can dedupe replays and
redeliveries by id alone.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Literal

from pydantic import Field

from loyalty_stream.events.envelope import Contract


class SourceRef(Contract):
    """Where the activity that caused an output was read: lets replays reconstruct processing order."""

    topic: str
    partition: int
    offset: int


class LedgerKind(StrEnum):
    EARN = "earn"  # points credited to the current (redeemable) balance
    PROMISE = "promise"  # delayed-accrual points credited to the promised balance
    CONVERT = "convert"  # promised points become current (delay elapsed or unlocked)
    EXPIRE = "expire"
    REDEEM = "redeem"
    REVERSE = "reverse"  # a redemption reversed: its points come back with their original expiry
    RETURN = "return"  # points clawed back because the goods that earned them were returned
    REISSUE = "reissue"  # redeemed points reissued with a new expiry after a return
    ADJUST = "adjust"  # manual adjustment by an operator
    REDATE = "redate"  # a lot's expiry moved (rolling expiry, membership change); amount 0


class Bucket(StrEnum):
    CURRENT = "current"
    PROMISED = "promised"


class LedgerEntry(Contract):
    type: Literal["LedgerEntry"] = "LedgerEntry"
    entry_id: str = Field(description="Stable id derived from the source event, rule/condition and program version.")
    seq: int = Field(description="Per-customer sequence number: the order the engine applied entries.")
    customer_id: str
    program_id: str
    program_version: int
    kind: LedgerKind
    bucket: Bucket
    amount: Decimal = Field(description="Signed points: positive credits, negative debits of the bucket.")
    desired_amount: Decimal | None = Field(
        default=None,
        description="What was due when less moved: before caps for an award, the full claim for a return, the "
        "consumed points for a reversal that withheld some.",
    )
    balance_after: Decimal = Field(description="Current (redeemable) balance after this entry.")
    promised_after: Decimal = Field(description="Promised balance after this entry.")
    lot_id: str | None = None
    source_event_id: str
    source_type: str
    source: SourceRef | None = None
    condition_code: str | None = None
    rule: str | None = None
    line_item_id: str | None = None
    bill_number: str | None = None
    redemption_id: str | None = None
    available_at: datetime | None = None
    expires_at: datetime | None = None
    occurred_at: datetime = Field(description="Event time of the entry (the due time for scheduled ones).")
    reason: str | None = None
    operator_id: str | None = None
    shortfall: Decimal | None = Field(
        default=None,
        description="Return claw-back only: points the return could not take because they had been redeemed and "
        "the program forgives them (return policy take_available).",
    )


class BalanceChange(Contract):
    type: Literal["BalanceChange"] = "BalanceChange"
    change_id: str
    customer_id: str
    program_id: str
    seq: int = Field(description="Sequence number of the last ledger entry included.")
    current: Decimal
    promised: Decimal
    lifetime_earned: Decimal
    redeemed: Decimal
    expired: Decimal
    returned: Decimal
    delta_current: Decimal
    delta_promised: Decimal
    tier: str | None
    cause_event_id: str
    cause_type: str
    occurred_at: datetime


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"
    PUSH = "push"
    WECHAT = "wechat"


class Notification(Contract):
    type: Literal["Notification"] = "Notification"
    notification_id: str
    customer_id: str
    program_id: str
    channel: Channel
    template: str
    data: dict[str, str] = Field(default_factory=dict)
    cause_event_id: str
    occurred_at: datetime


class RedemptionStatus(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class ConsumedLot(Contract):
    lot_id: str
    points: Decimal
    expires_at: datetime | None = None


class RedemptionResult(Contract):
    type: Literal["RedemptionResult"] = "RedemptionResult"
    result_id: str
    request_event_id: str
    customer_id: str
    program_id: str
    status: RedemptionStatus
    reason_code: str | None = Field(default=None, description="Machine-readable rejection reason.")
    message: str = Field(description="Human-readable outcome.")
    points_requested: Decimal
    points_debited: Decimal
    currency_value: Decimal
    redemption_id: str
    bill_number: str | None = None
    lots: list[ConsumedLot] = Field(default_factory=list)
    balance_after: Decimal
    occurred_at: datetime


class TierChange(Contract):
    type: Literal["TierChange"] = "TierChange"
    change_id: str
    customer_id: str
    program_id: str
    from_tier: str | None
    to_tier: str
    reason: str
    cause_event_id: str
    occurred_at: datetime


class CouponIssued(Contract):
    type: Literal["CouponIssued"] = "CouponIssued"
    coupon_id: str
    customer_id: str
    program_id: str
    series: str
    rule: str | None = None
    cause_event_id: str
    occurred_at: datetime


class DeadLetter(Contract):
    type: Literal["DeadLetter"] = "DeadLetter"
    dead_letter_id: str = Field(description="topic:partition:offset of the rejected message.")
    reason: str = Field(description="Readable reason, naming the bad field where there is one.")
    error_class: Literal[
        "not_json", "unknown_type", "schema_violation", "unknown_program", "wrong_topic", "engine_error",
        "rejected_by_program", "unresolved_reference",
    ] = Field(description="not_json, unknown_type, schema_violation: the bytes are not a valid activity; "
              "unknown_program, wrong_topic: it names a program or topic that does not take it; "
              "rejected_by_program: valid, but the program refuses it (an unknown event name, a deduction beyond "
              "the balance, a return past its window); unresolved_reference: a return, unlock or reversal whose "
              "purchase or redemption never arrived (it waited for it, see the README); engine_error: a bug.")
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str = Field(description="The original bytes, as UTF-8 text when they decode, else base64.")
    value_encoding: Literal["utf-8", "base64"]
    failed_at: datetime = Field(description="Processing time of the failure (the only wall-clock field).")
