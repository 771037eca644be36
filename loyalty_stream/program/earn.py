"""Earn conditions: how many points an activity is worth (the document's allocation strategies).

Each allocation value is "same for all tiers" (one Decimal) or a value per tier (a mapping; a tier left out
earns nothing from that condition).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, field_validator, model_validator

from loyalty_stream.events.envelope import FieldValue
from loyalty_stream.program.common import ProgramPart, TierValue

HUNDRED = Decimal(100)


def _non_negative(value: TierValue, what: str, minimum: Decimal = Decimal(0)) -> TierValue:
    values = value.values() if isinstance(value, dict) else [value]
    for v in values:
        if not v.is_finite() or v < minimum:
            raise ValueError(f"{what} must be at least {minimum}, got {v}")
    return value


class FixedAllocation(ProgramPart):
    """N points per activity, irrespective of the amount."""

    type: Literal["fixed"] = "fixed"
    points: TierValue

    @field_validator("points")
    @classmethod
    def _check(cls, value: TierValue) -> TierValue:
        return _non_negative(value, "points")


class CustomFieldSource(ProgramPart):
    """Prorate on an integer custom field instead of the amount.

    `scope: transaction` reads the activity's own custom fields (the bill's, or the registration/update
    payload's); `scope: registration` reads the customer's stored registration fields. A value that is not
    an integer (a string such as "John", a bool, a fraction) gives no points and is recorded in
    `Outcome.skipped` naming the field: the purchase itself is valid, so it is never dead-lettered for it.
    """

    custom_field: str = Field(min_length=1)
    scope: Literal["transaction", "registration"] = "transaction"


class ProratedAllocation(ProgramPart):
    """`percent` % of the transaction amount (or of a custom field's value): 10 % of 500 is 50."""

    type: Literal["prorated"] = "prorated"
    percent: TierValue
    source: Literal["transaction_amount"] | CustomFieldSource = "transaction_amount"

    @field_validator("percent")
    @classmethod
    def _check(cls, value: TierValue) -> TierValue:
        return _non_negative(value, "percent")


class StepAllocation(ProgramPart):
    """`points` per step of `step` spent.

    * `full` counts completed steps: 10 per 200 -> 450 earns 20 (it lies between 400 and 600).
    * `started` counts begun steps: 5 per 150 -> up to 150 earns 5, 150.01-300 earns 10. An amount of 0 has
      begun no step and earns nothing (the document's "0-150 gets 5" is read as (0, 150]).
    """

    type: Literal["step"] = "step"
    points: TierValue
    step: Decimal = Field(gt=0, allow_inf_nan=False)
    count: Literal["full", "started"] = "full"

    @field_validator("points")
    @classmethod
    def _check(cls, value: TierValue) -> TierValue:
        return _non_negative(value, "points")


class MultiplierAllocation(ProgramPart):
    """A promotion multiplying what earn condition `base` gives, inside an event-time window.

    `percent` is the multiplier in % (1000 = 10x). The condition awards the *uplift*, base x (percent - 100)%,
    as its own lot, meant to run in the same rule as the base allocation: base 10 + uplift 90 = the
    document's "10 points x 10 in Diwali -> 100", and outside the window only the base 10 is awarded. Keeping
    the uplift a separate lot lets it carry its own expiry and be reported as the promotion's cost.
    """

    type: Literal["multiplier"] = "multiplier"
    base: str
    percent: TierValue
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = Field(default=None, description="Exclusive end of the window.")

    @field_validator("percent")
    @classmethod
    def _check(cls, value: TierValue) -> TierValue:
        return _non_negative(value, "multiplier percent (100 = 1x)", HUNDRED)

    @model_validator(mode="after")
    def _window(self) -> MultiplierAllocation:
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self


class RoundUpRange(ProgramPart):
    from_points: Decimal = Field(ge=0)
    to_points: Decimal = Field(ge=0)
    round_to: Decimal = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> RoundUpRange:
        if self.to_points < self.from_points:
            raise ValueError("to_points must not be below from_points")
        return self


class RoundUpAllocation(ProgramPart):
    """Top the current balance up to the next multiple of `round_to` when it lies in a range (both ends
    included; the first matching range wins): 643 in 0-1000 to 10 -> +7; 40 in 30-100 to 100 -> +60."""

    type: Literal["round_up"] = "round_up"
    ranges: list[RoundUpRange] | dict[str, list[RoundUpRange]]


Allocation = Annotated[
    FixedAllocation | ProratedAllocation | StepAllocation | MultiplierAllocation | RoundUpAllocation,
    Field(discriminator="type"),
]


class AllocateBasedOn(ProgramPart):
    """Who the condition applies to: by tier (default), a registration field, or a transaction field.

    `registration_field` compares the customer's stored registration/profile custom field; `transaction_field`
    compares a bill attribute (`channel`, `store`) or, failing that, a bill custom field. Values compare
    exactly (an integer 25 equals the decimal 25, never the string "25").
    """

    kind: Literal["tier", "registration_field", "transaction_field"] = "tier"
    field: str | None = None
    equals: FieldValue | None = None

    @model_validator(mode="after")
    def _complete(self) -> AllocateBasedOn:
        if self.kind != "tier" and (not self.field or self.equals is None):
            raise ValueError(f"based_on {self.kind} needs both 'field' and 'equals'")
        return self


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
