"""Rule sets per activity: ordered rules, each a condition (expression) and a list of actions.

Semantics: every rule set of the activity runs, in the order written; within a set the rules form an
if / else-if chain (the first whose `when` holds runs its actions, the rest are skipped). Rule sets see the
customer as earlier sets left it (a bonus set after a base set sees the base points in
`customer.current_points`). Caps belong to a set and count everything its actions award.

Conditions are compiled once at load (`compile_rule_sets`, called by `checks.check_program`) into a
`RulePlan` stored in `Program.compiled`; the engine only ever evaluates the compiled closures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Literal, get_args

from pydantic import Field, field_validator, model_validator

from loyalty_stream.events.outputs import Channel
from loyalty_stream.program.common import ProgramPart
from loyalty_stream.program.expressions import ExpressionError, Predicate, compile_condition

if TYPE_CHECKING:
    from loyalty_stream.program.model import Program

ActivityName = Literal[
    "TransactionAdd",
    "Registration",
    "CustomerUpdate",
    "Engagement",
    "PointsRedemption",
    "DelayedAccrual",
    "TierChange",
]
ACTIVITY_NAMES: tuple[str, ...] = get_args(ActivityName)

Period = Literal["day", "calendar_week", "calendar_month", "calendar_year", "lifetime"]
"""Calendar periods in the program's time zone, by event time (see `engine.periods`)."""


class LineItemOptions(ProgramPart):
    """Allocate per line item; every item's points become their own lot naming its `line_item_id`.

    * `use_proportions: true` computes the condition once on the eligible items' total and splits the
      points by item amount ($300 bill of $100 + $200 at 10 % -> 10 and 20).
    * `use_proportions: false` computes the condition on each item on its own (a fixed 5 gives 5 per item).
    * `max_points` ("maximize point allocation") caps what this action awards on one transaction.
    * `sku_in` / `category_in` keep only matching items.

    Either way the item shares are whole multiples of the program's rounding quantum that add up exactly to
    the rounded total (largest remainder, ties to the earlier item), so no point is created or lost.
    A bill without line items earns as one bill-level lot unless a sku/category filter is set.
    """

    use_proportions: bool = True
    max_points: Decimal | None = Field(default=None, gt=0, description="Maximize point allocation: cap.")
    sku_in: list[str] | None = None
    category_in: list[str] | None = None

    @property
    def filtered(self) -> bool:
        return self.sku_in is not None or self.category_in is not None


class AllocateAction(ProgramPart):
    type: Literal["allocate"] = "allocate"
    condition: str = Field(description="Earn condition code.")
    line_items: LineItemOptions | None = None
    tender_modes: list[str] | None = Field(
        default=None,
        description="Tender unroller: earn only on the part of the bill paid with these payment modes.",
    )

    @field_validator("tender_modes")
    @classmethod
    def _modes(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("tender_modes needs at least one payment mode")
        return value


class NotifyAction(ProgramPart):
    type: Literal["notify"] = "notify"
    channel: Channel
    template: str = Field(min_length=1)
    data: dict[str, str] = Field(default_factory=dict)


class UpgradeTierAction(ProgramPart):
    type: Literal["upgrade_tier"] = "upgrade_tier"
    tier: str


class IssueCouponAction(ProgramPart):
    type: Literal["issue_coupon"] = "issue_coupon"
    series: str = Field(min_length=1)


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

ALLOWED_ACTIONS: Mapping[str, frozenset[str]] = {
    "TransactionAdd": frozenset({"allocate", "notify", "upgrade_tier", "issue_coupon"}),
    "Registration": frozenset({"allocate", "notify", "upgrade_tier", "issue_coupon"}),
    "CustomerUpdate": frozenset({"allocate", "notify", "upgrade_tier", "issue_coupon"}),
    "Engagement": frozenset({"allocate", "notify", "upgrade_tier", "issue_coupon"}),
    "PointsRedemption": frozenset({"redeem", "allocate", "notify", "upgrade_tier", "issue_coupon"}),
    "DelayedAccrual": frozenset({"convert", "notify", "upgrade_tier", "issue_coupon"}),
    "TierChange": frozenset({"allocate", "notify", "upgrade_tier", "issue_coupon"}),
}
"""Which actions each activity supports (the document's lists); anything else is a load error."""


class Rule(ProgramPart):
    name: str = Field(min_length=1)
    when: str = Field(default="true", description="Expression over the activity and the customer.")
    actions: list[Action] = Field(default_factory=list)


class TenderCap(ProgramPart):
    """Sum of tender amounts: only the first `limit` paid with `modes` in the period earns points.

    The capped modes' excess is removed from the amount points are computed on; other payment modes of the
    same bill are unaffected (10000 of ABC card per year; a 600 cash + 400 card bill with 100 card allowance
    left earns on 700).
    """

    modes: list[str] = Field(min_length=1)
    limit: Decimal = Field(gt=0)
    period: Period = "lifetime"


class TrackerCap(ProgramPart):
    """Tracker value: a numeric line-item custom field (litres of fuel) earns only for the first `limit`
    units in the period; an item past the allowance earns pro rata to the units still allowed."""

    field: str = Field(description="Line-item custom field tracked, e.g. litres.")
    limit: Decimal = Field(gt=0)
    period: Period = "lifetime"


class Caps(ProgramPart):
    """Per-customer limits of one rule set, counted in event time (periods in the program's zone).

    * `total_points`: everything the set's actions award in the period (capped awards record the desired
      amount on their ledger entries).
    * `source_value`: points are computed on min(source, this) for each transaction.
    * `tender_amount`, `tracker`: see their classes.
    """

    total_points: Decimal | None = Field(default=None, gt=0, description="Per customer, across the set.")
    total_points_period: Period = "lifetime"
    source_value: Decimal | None = Field(default=None, gt=0, description="Earn on min(amount, this).")
    tender_amount: TenderCap | None = None
    tracker: TrackerCap | None = None

    @property
    def any(self) -> bool:
        return self.total_points is not None or self.on_source

    @property
    def on_source(self) -> bool:
        """Caps that only make sense on a transaction's amounts."""
        return any(c is not None for c in (self.source_value, self.tender_amount, self.tracker))


class RuleSet(ProgramPart):
    """Rules run in order; the first whose condition holds runs its actions (an if / else-if chain)."""

    name: str = Field(min_length=1)
    rules: list[Rule] = Field(default_factory=list)
    caps: Caps = Field(default_factory=Caps)

    @model_validator(mode="after")
    def _unique_rules(self) -> RuleSet:
        names = [r.name for r in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule set {self.name!r}: duplicate rule names {duplicates}")
        return self


# Compiled form ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: Rule
    holds: Predicate
    where: str


@dataclass(frozen=True, slots=True)
class CompiledRuleSet:
    activity: str
    rule_set: RuleSet
    rules: tuple[CompiledRule, ...]
    where: str
    # The set's name and caps as plain attributes (the engine reads them for every set that fires).
    name: str = dataclass_field(init=False)
    caps: Caps = dataclass_field(init=False)
    total_points: Decimal | None = dataclass_field(init=False)
    source_value: Decimal | None = dataclass_field(init=False)
    amount_capped: bool = dataclass_field(init=False)
    """A tender or tracker cap: only then can a unit's allowed amount differ from its amount."""

    def __post_init__(self) -> None:
        caps = self.rule_set.caps
        set_field = object.__setattr__  # (frozen)
        set_field(self, "name", self.rule_set.name)
        set_field(self, "caps", caps)
        set_field(self, "total_points", caps.total_points)
        set_field(self, "source_value", caps.source_value)
        set_field(self, "amount_capped", caps.tender_amount is not None or caps.tracker is not None)


@dataclass(frozen=True, slots=True)
class RulePlan:
    """Every activity's rule sets with their conditions compiled; the engine's only view of the rules."""

    by_activity: Mapping[str, tuple[CompiledRuleSet, ...]]
    by_rule: Mapping[int, CompiledRule]
    """id(rule) -> compiled rule (for `condition_holds` callers that hold a Rule)."""


PLAN_KEY = "rule_plan"


def rule_where(activity: str, rule_set: RuleSet, rule: Rule) -> str:
    return f"rule_sets.{activity}[{rule_set.name}].rules[{rule.name}]"


def compile_rule_sets(program: Program) -> tuple[RulePlan, list[str]]:
    """Compile every rule condition; returns the plan and the problems (each naming rule and column)."""
    problems: list[str] = []
    by_activity: dict[str, tuple[CompiledRuleSet, ...]] = {}
    by_rule: dict[int, CompiledRule] = {}
    for activity, sets in program.rule_sets.items():
        compiled_sets = []
        for rule_set in sets:
            compiled_rules = []
            for rule in rule_set.rules:
                where = rule_where(activity, rule_set, rule)
                try:
                    condition = compile_condition(rule.when, activity)
                except ExpressionError as exc:
                    problems.append(f"{where}.when: {exc}")
                    continue
                compiled = CompiledRule(rule, condition.holds, where)
                compiled_rules.append(compiled)
                by_rule[id(rule)] = compiled
            set_where = f"rule_sets.{activity}[{rule_set.name}]"
            compiled_sets.append(CompiledRuleSet(activity, rule_set, tuple(compiled_rules), set_where))
        by_activity[activity] = tuple(compiled_sets)
    return RulePlan(by_activity, by_rule), problems


def rule_plan(program: Program) -> RulePlan:
    """The program's compiled plan; compiled on first use for programs built without the loader."""
    plan = program.compiled.get(PLAN_KEY)
    if isinstance(plan, RulePlan):
        return plan
    plan, problems = compile_rule_sets(program)
    if problems:
        raise ValueError("invalid rule conditions:\n" + "\n".join(problems))
    program.compiled[PLAN_KEY] = plan
    return plan
