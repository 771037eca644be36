"""Request and response bodies of the HTTP API. The handlers validate and serialise through these models and
the OpenAPI document is generated from them, so the document cannot drift from what the API does.

Points and money are strings in responses (exact decimals, as on the topics); requests accept strings or
JSON numbers.
"""

from __future__ import annotations

import datetime as dt
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from loyalty_stream.events.envelope import Points
from loyalty_stream.events.outputs import Notification


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    event_time: AwareDatetime | None = Field(
        default=None, description="When the action counts as happening (with offset); now when absent.")


class AdjustmentRequest(Request):
    """Add or deduct points. A deduction never takes the balance below zero: without `clamp` one that would
    is refused by the engine (dead-letter topic, with the balance in its reason)."""

    direction: Literal["add", "deduct"]
    points: Points
    reason: str = Field(min_length=1, max_length=500)
    operator_id: str = Field(min_length=1, max_length=200)
    clamp: bool = Field(default=False, description="Deduct what is there instead of refusing.")


class UnlockRequest(Request):
    """Make a bill's promised points current now (all of them, or only these line items')."""

    bill_number: str = Field(min_length=1, max_length=200)
    item_ids: list[str] = Field(default_factory=list)


class ReversalRequest(Request):
    """Give a redemption's points back (with their original expiry). The body may be empty."""

    bill_number: str | None = Field(default=None, max_length=200,
                                    description="When given, must be the bill the redemption was made on.")


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Accepted(Response):
    """The activity is on its topic; the worker applies it (see the ledger, or the history endpoint)."""

    status: Literal["accepted"] = "accepted"
    event_id: str = Field(description="The activity's event id: the Idempotency-Key when one was sent.")
    type: str
    topic: str


class Balance(Response):
    program_id: str
    customer_id: str
    current: Decimal = Field(description="Redeemable now (negative while a return's debt is open).")
    promised: Decimal = Field(description="Delayed points, not redeemable yet.")
    lifetime_earned: Decimal | None = Field(description="Null until a balance change has been seen (they are "
                                            "kept 30 days; a rebuild after that knows only the ledger's balances).")
    redeemed: Decimal | None
    expired: Decimal | None
    returned: Decimal | None
    tier: str | None
    seq: int = Field(description="Sequence number of the last ledger entry reflected.")
    totals_seq: int | None = Field(description="Sequence number the lifetime totals and the tier reflect. They come "
                                   "from the balance-changes topic, the balances from the ledger, so they may trail "
                                   "`seq` for a moment; equal once both topics are read up to the same activity.")
    updated_at: datetime | None = Field(description="Event time of the last change.")


class HistoryItem(Response):
    model_config = ConfigDict(extra="ignore")

    entry_id: str
    seq: int
    kind: str
    bucket: str
    amount: Decimal
    balance_after: Decimal
    promised_after: Decimal
    occurred_at: datetime
    text: str = Field(description="One line for the customer, e.g. '2026-03-05  +50 points earned on bill B-1'.")
    source_event_id: str
    source_type: str
    bill_number: str | None = None
    line_item_id: str | None = None
    redemption_id: str | None = None
    expires_at: datetime | None = None
    available_at: datetime | None = None
    reason: str | None = None
    operator_id: str | None = None


class History(Response):
    program_id: str
    customer_id: str
    items: list[HistoryItem] = Field(description="Newest first.")


class ExpirationGroup(Response):
    date: dt.date = Field(description="Last local day the points are usable.")
    points: Decimal


class Expirations(Response):
    program_id: str
    customer_id: str
    as_of: date
    total: Decimal
    groups: list[ExpirationGroup] = Field(description="Soonest first; promised points included.")


class PromisedGroup(Response):
    available_at: datetime | None
    bill_number: str | None
    points: Decimal


class Promised(Response):
    program_id: str
    customer_id: str
    total: Decimal
    items: list[PromisedGroup] = Field(description="In the order they become current.")


class Notifications(Response):
    program_id: str
    customer_id: str
    items: list[Notification] = Field(description="Newest first.")


class DistributionBucket(Response):
    lower: Decimal | None = Field(description="Inclusive; null is minus infinity.")
    upper: Decimal | None = Field(description="Exclusive; null is plus infinity.")
    label: str
    customers: int


class Distribution(Response):
    program_id: str
    customers: int
    buckets: list[DistributionBucket]
    percentiles: dict[str, Decimal] = Field(description="Current balance at p25, p50, p75, p90, p99.")
    min: Decimal | None
    max: Decimal | None


class Programs(Response):
    programs: list[str] = Field(description="Programs the read model has seen.")


class Health(Response):
    status: Literal["ok", "unavailable"]
    redis: bool
    kafka: bool = Field(description="The producer is connected (it connects on the first admin request).")


class FieldError(Response):
    field: str
    message: str
    type: str


class Error(Response):
    error: str
    message: str
    fields: list[FieldError] = Field(default_factory=list)
