"""Redeem conditions: who may spend how many points, and per-customer redemption limits."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field

from loyalty_stream.program.common import ProgramPart


class LastDaysLimit(ProgramPart):
    days: int = Field(ge=1)
    points: Decimal = Field(gt=0)


class RedemptionLimits(ProgramPart):
    per_day: Decimal | None = Field(default=None, gt=0)
    per_calendar_week: Decimal | None = Field(default=None, gt=0)
    per_calendar_month: Decimal | None = Field(default=None, gt=0)
    per_last_days: LastDaysLimit | None = None


class RedeemCondition(ProgramPart):
    code: str = Field(min_length=1)
    name: str = ""
    tiers: list[str] | None = Field(default=None, description="Tiers it applies to; all when absent.")
    min_points: Decimal | None = Field(default=None, gt=0)
    max_points_per_transaction: Decimal | None = Field(default=None, gt=0)
    balance_required: Decimal | None = Field(default=None, ge=0)
    multiples_of: Decimal | None = Field(default=None, gt=0)
    lifetime_points_required: Decimal | None = Field(default=None, ge=0)
    lifetime_purchases_required: Decimal | None = Field(default=None, ge=0)
    limits: RedemptionLimits = Field(default_factory=RedemptionLimits)
