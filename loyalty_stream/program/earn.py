"""Earn conditions: how many points an activity is worth (the document's allocation strategies)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from loyalty_stream.events.envelope import FieldValue
from loyalty_stream.program.common import ProgramPart, TierValue


class FixedAllocation(ProgramPart):
    """N points per activity, irrespective of the amount."""

    type: Literal["fixed"] = "fixed"
    points: TierValue


class CustomFieldSource(ProgramPart):
    """Prorate on an integer custom field instead of the amount (strings are rejected, never crash)."""

    custom_field: str
    scope: Literal["transaction", "registration"] = "transaction"


class ProratedAllocation(ProgramPart):
    """`percent` % of the transaction amount (or of a custom field's value)."""

    type: Literal["prorated"] = "prorated"
    percent: TierValue
    source: Literal["transaction_amount"] | CustomFieldSource = "transaction_amount"


class StepAllocation(ProgramPart):
    """`points` per step of `step` spent: full steps (10 per 200 -> 450 earns 20) or started ones."""

    type: Literal["step"] = "step"
    points: TierValue
    step: Decimal = Field(gt=0)
    count: Literal["full", "started"] = "full"


class MultiplierAllocation(ProgramPart):
    """A promotion: `percent` % of what earn condition `base` gives (1000 = 10x), inside a window."""

    type: Literal["multiplier"] = "multiplier"
    base: str
    percent: TierValue
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None


class RoundUpRange(ProgramPart):
    from_points: Decimal = Field(ge=0)
    to_points: Decimal = Field(ge=0)
    round_to: Decimal = Field(gt=0)


class RoundUpAllocation(ProgramPart):
    """Top the balance up to the next multiple of `round_to` when it lies in a range (643 -> +7)."""

    type: Literal["round_up"] = "round_up"
    ranges: list[RoundUpRange] | dict[str, list[RoundUpRange]]


Allocation = Annotated[
    FixedAllocation | ProratedAllocation | StepAllocation | MultiplierAllocation | RoundUpAllocation,
    Field(discriminator="type"),
]


class AllocateBasedOn(ProgramPart):
    """Who the condition applies to: by tier (default), a registration field, or a transaction field."""

    kind: Literal["tier", "registration_field", "transaction_field"] = "tier"
    field: str | None = None
    equals: FieldValue | None = None


class EarnCondition(ProgramPart):
    code: str = Field(min_length=1, description="Condition code, written on every ledger entry it produces.")
    name: str = ""
    description: str = ""
    allocation: Allocation
    based_on: AllocateBasedOn = Field(default_factory=AllocateBasedOn)
    delay_days: int | None = Field(default=None, ge=0, description="Delayed accrual: promised for N days.")
    expiry: str | None = Field(default=None, description="Code of the expiry condition for these points.")


def window_contains(condition: MultiplierAllocation, at: datetime) -> bool:
    if condition.valid_from is not None and at < condition.valid_from:
        return False
    return not (condition.valid_until is not None and at >= condition.valid_until)
