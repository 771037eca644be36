"""The loyalty program: every rule the engine evaluates, versioned so ledger entries name what produced them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PrivateAttr, field_validator, model_validator

from loyalty_stream.program.common import ProgramPart, Rounding, tiers_named
from loyalty_stream.program.earn import EarnCondition, MultiplierAllocation, RoundUpAllocation
from loyalty_stream.program.event_points import EventPoints
from loyalty_stream.program.expiry import ExpiryCondition
from loyalty_stream.program.redeem import RedeemCondition
from loyalty_stream.program.retention import Retention
from loyalty_stream.program.returns import ReturnPolicy
from loyalty_stream.program.rules import ActivityName, RuleSet
from loyalty_stream.program.tiers import Tier, TierPolicy


class ProgramCache(dict[str, Any]):
    """`Program.compiled`: a copied program starts with an empty cache and compiles its own artefacts on first
    use. Copies of the artefacts would be wrong (plans key rules by `id`) and some cannot be copied at all
    (the engine's compiled frozen dataclasses)."""

    def __copy__(self) -> ProgramCache:
        return ProgramCache()

    def __deepcopy__(self, memo: dict[int, Any]) -> ProgramCache:
        return ProgramCache()


class Reminders(ProgramPart):
    """Expiry reminders: a notification N days before a group of points expires."""

    days_before: list[int] = Field(default_factory=list)
    channel: str = "push"
    template: str = "points_expiring"


class Program(ProgramPart):
    id: str = Field(min_length=1)
    version: int = Field(ge=1)
    name: str = ""
    timezone: str = "UTC"
    rounding: Rounding = Field(default_factory=Rounding)
    point_value: Decimal = Field(default=Decimal(1), gt=0, description="Currency value of one point.")
    tiers: list[Tier] = Field(default_factory=lambda: [Tier(name="base")])
    tier_policy: TierPolicy = Field(default_factory=TierPolicy)
    earn_conditions: list[EarnCondition] = Field(default_factory=list)
    expiry_conditions: list[ExpiryCondition] = Field(default_factory=list)
    default_expiry: str | None = Field(default=None, description="Expiry code for points with none of their own.")
    roll_expiry_on_zero_points: bool = False
    redeem_conditions: list[RedeemCondition] = Field(default_factory=list)
    return_policy: ReturnPolicy = Field(default_factory=ReturnPolicy)
    retention: Retention = Field(
        default_factory=Retention,
        description="How long bills and redemptions are kept (the return and reversal windows; absent: "
        "forever), and how long a return, unlock or reversal that arrives before its purchase or redemption "
        "waits for it (parking_window_hours); see program/retention.py.",
    )
    rule_sets: dict[ActivityName, list[RuleSet]] = Field(default_factory=dict)
    event_points: EventPoints = Field(default_factory=EventPoints)
    reminders: Reminders = Field(default_factory=Reminders)

    _earn: dict[str, EarnCondition] = PrivateAttr(default_factory=dict)
    _expiry: dict[str, ExpiryCondition] = PrivateAttr(default_factory=dict)
    _redeem: dict[str, RedeemCondition] = PrivateAttr(default_factory=dict)
    _zone: ZoneInfo = PrivateAttr()
    compiled: dict[str, Any] = Field(default_factory=ProgramCache, exclude=True, repr=False)
    """Pre-compiled artefacts (expressions, plans) keyed by owner; filled by the loader and on first use, never
    serialised, and never copied (`ProgramCache`)."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("tiers")
    @classmethod
    def _tiers_ordered(cls, value: list[Tier]) -> list[Tier]:
        if not value:
            raise ValueError("a program needs at least one tier")
        names = [t.name for t in value]
        if len(set(names)) != len(names):
            raise ValueError("tier names must be unique")
        thresholds = [t.threshold for t in value]
        if thresholds != sorted(thresholds):
            raise ValueError("tiers must be listed from the lowest threshold up")
        return value

    @model_validator(mode="after")
    def _references_resolve(self) -> Program:
        self._earn = _unique(self.earn_conditions, "earn_conditions")
        self._expiry = _unique(self.expiry_conditions, "expiry_conditions")
        self._redeem = _unique(self.redeem_conditions, "redeem_conditions")
        self._zone = ZoneInfo(self.timezone)
        tier_names = {t.name for t in self.tiers}
        for condition in self.earn_conditions:
            where = f"earn_conditions[{condition.code}]"
            if condition.expiry is not None and condition.expiry not in self._expiry:
                raise ValueError(f"{where}.expiry: unknown expiry condition {condition.expiry!r}")
            allocation = condition.allocation
            if isinstance(allocation, MultiplierAllocation) and allocation.base not in self._earn:
                raise ValueError(f"{where}.allocation.base: unknown earn condition {allocation.base!r}")
            values = [getattr(allocation, n) for n in ("points", "percent") if hasattr(allocation, n)]
            if isinstance(allocation, RoundUpAllocation) and isinstance(allocation.ranges, dict):
                values.append({name: 0 for name in allocation.ranges})
            for value in values:
                unknown = tiers_named(value) - tier_names
                if unknown:
                    raise ValueError(f"{where}.allocation: unknown tiers {sorted(unknown)}")
        for code in (self.default_expiry, self.event_points.expiry, self.return_policy.reissue_expiry):
            if code is not None and code not in self._expiry:
                raise ValueError(f"unknown expiry condition {code!r}")
        for redeem in self.redeem_conditions:
            unknown = set(redeem.tiers or []) - tier_names
            if unknown:
                raise ValueError(f"redeem_conditions[{redeem.code}].tiers: unknown tiers {sorted(unknown)}")
        for activity, sets in self.rule_sets.items():
            for rule_set in sets:
                for rule in rule_set.rules:
                    for i, action in enumerate(rule.actions):
                        where = f"rule_sets.{activity}[{rule_set.name}].rules[{rule.name}].actions[{i}]"
                        code = getattr(action, "condition", None)
                        if action.type == "allocate" and code not in self._earn:
                            raise ValueError(f"{where}: unknown earn condition {code!r}")
                        if action.type == "redeem" and code is not None and code not in self._redeem:
                            raise ValueError(f"{where}: unknown redeem condition {code!r}")
                        if action.type == "upgrade_tier" and getattr(action, "tier", None) not in tier_names:
                            raise ValueError(f"{where}: unknown tier {getattr(action, 'tier', None)!r}")
        return self

    # Lookups used by the engine on the hot path. They read the private attributes straight from pydantic's
    # storage: `self._earn` would go through `BaseModel.__getattr__` (a failed normal lookup first), which
    # costs more than the lookup itself.
    def earn_condition(self, code: str) -> EarnCondition:
        earn: dict[str, EarnCondition] = self.__pydantic_private__["_earn"]  # type: ignore[index]
        return earn[code]

    def expiry_condition(self, code: str) -> ExpiryCondition:
        expiry: dict[str, ExpiryCondition] = self.__pydantic_private__["_expiry"]  # type: ignore[index]
        return expiry[code]

    def redeem_condition(self, code: str) -> RedeemCondition:
        redeem: dict[str, RedeemCondition] = self.__pydantic_private__["_redeem"]  # type: ignore[index]
        return redeem[code]

    @property
    def zone(self) -> ZoneInfo:
        zone: ZoneInfo = self.__pydantic_private__["_zone"]  # type: ignore[index]
        return zone

    @property
    def lowest_tier(self) -> str:
        return self.tiers[0].name

    def rule_sets_for(self, activity: str) -> list[RuleSet]:
        return self.rule_sets.get(activity, [])  # type: ignore[call-overload,no-any-return]


def _unique(items: list[Any], where: str) -> dict[str, Any]:
    index: dict[str, Any] = {}
    for item in items:
        if item.code in index:
            raise ValueError(f"{where}: duplicate code {item.code!r}")
        index[item.code] = item
    return index
