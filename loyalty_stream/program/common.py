"""Building blocks shared by every section of a program definition."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from loyalty_stream.engine.rounding import RoundingStrategy


class ProgramPart(BaseModel):
    """Strict and immutable: an unknown key in a program file is a load error naming it."""

    model_config = ConfigDict(extra="forbid", frozen=True)


TierValue = Decimal | dict[str, Decimal]
"""One value for all tiers ("same for all tiers"), or a value per tier name."""


def for_tier(value: TierValue, tier: str | None) -> Decimal | None:
    """The value that applies to `tier`; None when a per-tier value leaves that tier out."""
    if isinstance(value, dict):
        return value.get(tier) if tier is not None else None
    return value


def tiers_named(value: TierValue) -> set[str]:
    return set(value) if isinstance(value, dict) else set()


class Rounding(ProgramPart):
    decimals: int = Field(default=3, ge=0, le=3)
    strategy: RoundingStrategy = RoundingStrategy.HALF_UP
