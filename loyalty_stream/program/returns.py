"""Return conditions: what happens to earned and redeemed points when goods come back."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from loyalty_stream.program.common import ProgramPart


class ReturnPolicy(ProgramPart):
    shortfall: Literal["take_available", "allow_negative"] = Field(
        default="take_available",
        description="When returned points were already spent: claw back what is there, or go negative.",
    )
    redeemed_points: Literal["reverse", "reissue", "keep"] = Field(
        default="reverse", description="Points redeemed on a returned bill: reversed (original expiry) or reissued."
    )
    reissue_expiry: str | None = Field(default=None, description="Expiry condition code for reissued points.")
