"""Redeem conditions: who may spend how many points, and per-customer redemption limits.

A condition applies to every tier ("same for all tiers", `tiers` absent) or to the tiers it lists. The
PointsRedemption rule sets pick one with a `redeem` action; the engine checks it in a fixed order
(eligibility, request shape, balance, period limits) so the first failing check names the rejection.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field, model_validator

from loyalty_stream.program.common import ProgramPart


class LastDaysLimit(ProgramPart):
    """At most `points` redeemed in the rolling `days` x 24 h before the redemption."""

    days: int = Field(ge=1)
    points: Decimal = Field(gt=0)


class RedemptionLimits(ProgramPart):
    """Per-customer thresholds, counted in event time and the program's time zone (weeks start Monday)."""

    per_day: Decimal | None = Field(default=None, gt=0)
    per_calendar_week: Decimal | None = Field(default=None, gt=0)
    per_calendar_month: Decimal | None = Field(default=None, gt=0)
    per_last_days: LastDaysLimit | None = None


class RedeemCondition(ProgramPart):
    code: str = Field(min_length=1)
    name: str = ""
    description: str = ""
    tiers: list[str] | None = Field(default=None, description="Tiers it applies to; all when absent.")
    min_points: Decimal | None = Field(default=None, gt=0, description="Fewest points per redemption.")
    max_points_per_transaction: Decimal | None = Field(default=None, gt=0)
    balance_required: Decimal | None = Field(default=None, ge=0, description="Balance needed to redeem.")
    multiples_of: Decimal | None = Field(default=None, gt=0)
    lifetime_points_required: Decimal | None = Field(default=None, ge=0)
    lifetime_purchases_required: Decimal | None = Field(default=None, ge=0)
    limits: RedemptionLimits = Field(default_factory=RedemptionLimits)

    @model_validator(mode="after")
    def _consistent(self) -> RedeemCondition:
        low, high = self.min_points, self.max_points_per_transaction
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_points {low} exceeds max_points_per_transaction {high}: nothing redeems")
        step = self.multiples_of
        if step is not None and high is not None and high < step:
            raise ValueError(f"max_points_per_transaction {high} is below multiples_of {step}: none redeem")
        return self

    def covers(self, tier: str | None) -> bool:
        return self.tiers is None or tier in self.tiers
