"""Tiers: named levels reached by crossing a threshold of lifetime points or purchases.

Upgrades only (never downgrades): automatically after every activity when `automatic`, or by a rule's
`upgrade_tier` action. Each change emits a TierChange output and a notification, then runs the program's
`TierChange` rule sets (an upgrade bonus, a coupon, ...).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field

from loyalty_stream.events.outputs import Channel
from loyalty_stream.program.common import ProgramPart


class Tier(ProgramPart):
    name: str = Field(min_length=1)
    threshold: Decimal = Field(default=Decimal(0), ge=0, allow_inf_nan=False)


class TierPolicy(ProgramPart):
    basis: Literal["lifetime_points", "lifetime_purchases"] = "lifetime_points"
    automatic: bool = Field(default=True, description="Upgrade as soon as a threshold is crossed.")
    notify_channel: Channel | None = Channel.PUSH
    notify_template: str | None = "tier_upgraded"
