"""Expiry conditions: when earned points stop being redeemable."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

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


class YearlyDate(ProgramPart):
    month: int = Field(ge=1, le=12)
    day: int = Field(ge=1, le=31)


class ExpiryCondition(ProgramPart):
    code: str = Field(min_length=1)
    name: str = ""
    based_on: ExpiryBasis = "event_date"
    unit: Literal["days", "months", "date", "never"] = "never"
    value: TierValue | None = Field(default=None, description="Days or months to add (per tier allowed).")
    date: dt.date | None = Field(default=None, description="The fixed date, for unit 'date'.")
    yearly: YearlyDate | None = Field(default=None, description="Month/day, for based_on fixed_yearly_date.")
    field: str | None = Field(default=None, description="Extended field holding a date, for *_extended_field.")
