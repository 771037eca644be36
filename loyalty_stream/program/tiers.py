"""Tiers: named levels reached by crossing a threshold of lifetime points or purchases."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field

from loyalty_stream.program.common import ProgramPart


class Tier(ProgramPart):
    name: str = Field(min_length=1)
    threshold: Decimal = Field(default=Decimal(0), ge=0)


class TierPolicy(ProgramPart):
    basis: Literal["lifetime_points", "lifetime_purchases"] = "lifetime_points"
    automatic: bool = Field(default=True, description="Upgrade as soon as a threshold is crossed.")
    notify_channel: str | None = "push"
    notify_template: str | None = "tier_upgraded"
