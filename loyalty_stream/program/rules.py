"""Rule sets per activity: ordered rules, each a condition (expression) and a list of actions."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field

from loyalty_stream.events.outputs import Channel
from loyalty_stream.program.common import ProgramPart

ActivityName = Literal[
    "TransactionAdd",
    "Registration",
    "CustomerUpdate",
    "Engagement",
    "PointsRedemption",
    "DelayedAccrual",
    "TierChange",
]


class LineItemOptions(ProgramPart):
    """Allocate per line item: split by price (use proportions), cap, or filter on tenders."""

    use_proportions: bool = True
    max_points: Decimal | None = Field(default=None, gt=0, description="Maximize point allocation: cap.")
    sku_in: list[str] | None = None
    category_in: list[str] | None = None


class AllocateAction(ProgramPart):
    type: Literal["allocate"] = "allocate"
    condition: str = Field(description="Earn condition code.")
    line_items: LineItemOptions | None = None
    tender_modes: list[str] | None = Field(default=None, description="Tender unroller: earn on these modes only.")


class NotifyAction(ProgramPart):
    type: Literal["notify"] = "notify"
    channel: Channel
    template: str
    data: dict[str, str] = Field(default_factory=dict)


class UpgradeTierAction(ProgramPart):
    type: Literal["upgrade_tier"] = "upgrade_tier"
    tier: str


class IssueCouponAction(ProgramPart):
    type: Literal["issue_coupon"] = "issue_coupon"
    series: str


class ConvertAction(ProgramPart):
    """DelayedAccrual: convert the due promised points to current."""

    type: Literal["convert"] = "convert"


class RedeemAction(ProgramPart):
    type: Literal["redeem"] = "redeem"
    condition: str | None = Field(default=None, description="Redeem condition code; the first that applies.")


Action = Annotated[
    AllocateAction | NotifyAction | UpgradeTierAction | IssueCouponAction | ConvertAction | RedeemAction,
    Field(discriminator="type"),
]


class Rule(ProgramPart):
    name: str = Field(min_length=1)
    when: str = Field(default="true", description="Expression over the activity and the customer.")
    actions: list[Action] = Field(default_factory=list)


class TenderCap(ProgramPart):
    modes: list[str]
    limit: Decimal = Field(gt=0)
    period: Literal["day", "calendar_week", "calendar_month", "calendar_year", "lifetime"] = "lifetime"


class TrackerCap(ProgramPart):
    field: str = Field(description="Line-item custom field tracked, e.g. litres.")
    limit: Decimal = Field(gt=0)
    period: Literal["day", "calendar_week", "calendar_month", "calendar_year", "lifetime"] = "lifetime"


class Caps(ProgramPart):
    total_points: Decimal | None = Field(default=None, gt=0, description="Per customer, across the set.")
    total_points_period: Literal["day", "calendar_week", "calendar_month", "calendar_year", "lifetime"] = (
        "lifetime"
    )
    source_value: Decimal | None = Field(default=None, gt=0, description="Earn on min(amount, this).")
    tender_amount: TenderCap | None = None
    tracker: TrackerCap | None = None


class RuleSet(ProgramPart):
    """Rules run in order; the first whose condition holds runs its actions (an if / else-if chain)."""

    name: str = Field(min_length=1)
    rules: list[Rule] = Field(default_factory=list)
    caps: Caps = Field(default_factory=Caps)
