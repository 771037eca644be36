"""Return conditions: what happens to earned and redeemed points when goods come back.

The engine claws back, from the lots a bill created, the share of each lot that the returned amount (or line
item) earned; points redeemed to pay for a bill are given back once the whole bill has been returned.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from loyalty_stream.program.common import ProgramPart


class ReturnPolicy(ProgramPart):
    shortfall: Literal["take_available", "allow_negative"] = Field(
        default="take_available",
        description="When returned points were already redeemed: claw back what is left and forgive the "
        "rest (recorded as the ledger entry's shortfall), or charge the rest as a negative balance (debt) "
        "that the next points pay off.",
    )
    redeemed_points: Literal["reverse", "reissue", "keep"] = Field(
        default="reverse",
        description="Points redeemed on a bill that is fully returned: reversed into their lots (original "
        "expiry), reissued as a new lot with `reissue_expiry`, or kept spent.",
    )
    reissue_expiry: str | None = Field(
        default=None, description="Expiry condition code of reissued points; the program default if absent."
    )
