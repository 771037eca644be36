"""Expiry conditions: when earned points stop being redeemable (the document's "Expire Pts. Based on").

Every basis yields a calendar date D in the program's time zone; the points are usable through D and gone at
00:00 local of D+1 (see `engine/expiry.py`). The basis says where D starts from:

- `event_date` / `rolling_event_date`: the activity's local date, moved by the time unit (`days`: + N days;
  `months`: the last day of the month N months later; `date`: the fixed `date`; `never` or no unit: never).
  Rolling lots are re-dated by every later rolling event.
- `membership_end`: the customer's membership end date; `registration_date`: the next anniversary of the
  registration date after the event; `fixed_yearly_date`: the next `yearly` month/day after the event;
  `*_extended_field`: the date in extended field `field`. For these the unit is an optional offset
  (`days` / `months`, same arithmetic as above) added to that date; `never` turns expiry off.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Literal

from pydantic import Field, model_validator

from loyalty_stream.program.common import ProgramPart, TierValue

ExpiryBasis = Literal[
    "event_date",
    "rolling_event_date",
    "membership_end",
    "registration_date",
    "fixed_yearly_date",
    "transaction_extended_field",
    "customer_extended_field",
]

ExpiryUnit = Literal["days", "months", "date", "never"]

EVENT_BASES: frozenset[str] = frozenset({"event_date", "rolling_event_date"})
FIELD_BASES: frozenset[str] = frozenset({"transaction_extended_field", "customer_extended_field"})
CUSTOMER_BASES: frozenset[str] = frozenset({"membership_end", "registration_date", "customer_extended_field"})
"""Bases reading customer data: their lots follow it when a Registration or CustomerUpdate changes it."""


class YearlyDate(ProgramPart):
    month: int = Field(ge=1, le=12)
    day: int = Field(ge=1, le=31)

    @model_validator(mode="after")
    def _real_day(self) -> YearlyDate:
        # 2024 is a leap year, so 29 Feb is accepted (it falls on 28 Feb in other years).
        try:
            dt.date(2024, self.month, self.day)
        except ValueError:
            raise ValueError(f"no day {self.day} in month {self.month}") from None
        return self


class ExpiryCondition(ProgramPart):
    code: str = Field(min_length=1)
    name: str = ""
    based_on: ExpiryBasis = "event_date"
    unit: ExpiryUnit | None = Field(
        default=None,
        description="days/months: added to the basis date; date: the fixed `date`; never. Omitted: never for "
        "event dates, the basis date itself for the others.",
    )
    value: TierValue | None = Field(default=None, description="Days or months to add (per tier allowed).")
    date: dt.date | None = Field(default=None, description="The fixed date, for unit 'date'.")
    yearly: YearlyDate | None = Field(default=None, description="Month/day, for based_on fixed_yearly_date.")
    field: str | None = Field(default=None, description="Extended field holding a date (*_extended_field).")

    @model_validator(mode="after")
    def _consistent(self) -> ExpiryCondition:
        """Reject settings the basis would silently ignore, so a typo never means 'never expires'."""
        if self.unit in ("days", "months"):
            if self.value is None:
                raise ValueError(f"unit {self.unit!r} needs a value")
            values = self.value.values() if isinstance(self.value, dict) else [self.value]
            for number in values:
                if number < 0 or number != number.to_integral_value():
                    raise ValueError(f"value must be a whole number of {self.unit}, got {number}")
        elif self.value is not None:
            raise ValueError(f"value is only used with unit 'days' or 'months', not {self.unit!r}")
        if self.unit == "date":
            if self.based_on not in EVENT_BASES:
                raise ValueError(f"unit 'date' is only valid for event dates, not {self.based_on!r}")
            if self.date is None:
                raise ValueError("unit 'date' needs a date")
        elif self.date is not None:
            raise ValueError("date is only used with unit 'date'")
        if (self.based_on == "fixed_yearly_date") != (self.yearly is not None):
            raise ValueError("yearly is required for, and only used with, based_on 'fixed_yearly_date'")
        if (self.based_on in FIELD_BASES) != (self.field is not None):
            raise ValueError("field is required for, and only used with, the extended-field bases")
        return self

    def amount_for(self, tier: str | None) -> int | None:
        """Whole days/months for `tier`; None when a per-tier value leaves the tier out (never expires)."""
        if self.value is None:
            return None
        if isinstance(self.value, dict):
            number: Decimal | None = self.value.get(tier) if tier is not None else None
        else:
            number = self.value
        return None if number is None else int(number)
