"""What the engine's hot path needs to know about a program, derived once per program object.

Programs are immutable, so everything here is computed on first use and kept in `Program.compiled` (plain
attribute reads instead of pydantic lookups and re-derivations on every activity). The cache remembers the
program it was computed for: a copied program (`model_copy` shares `compiled`) computes its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from loyalty_stream.engine.rounding import Rounder, RoundingStrategy, rounder
from loyalty_stream.program.expressions import compile_condition
from loyalty_stream.program.model import Program
from loyalty_stream.program.retention import redemption_lookback_days
from loyalty_stream.program.rules import CompiledRuleSet, Period, Rule, rule_plan

_KEY: Final = "engine_facts"


@dataclass(frozen=True, slots=True)
class RuleRun:
    """A rule as the runner needs it (`rules.run_rule_sets`): its condition as a plain callable (a call of
    the compiled rule's attribute is a method lookup by name), and its actions with their types read once."""

    rule: Rule
    holds: Callable[[Any], bool] | None
    """None: the condition always holds (`when: true`), no call needed."""
    actions: tuple[tuple[str, Any], ...]
    """(action type, action) in order."""


class SetFacts:
    """What `caps.SetScope` reads of a rule set and its caps, as native attributes read once per program (the
    compiled set and the caps are interpreted classes: an attribute read is a generic lookup)."""

    def __init__(self, compiled: CompiledRuleSet) -> None:
        caps = compiled.caps
        self.compiled = compiled
        self.name: str = compiled.name
        self.activity: str = compiled.activity
        self.total_points: Decimal | None = compiled.total_points
        self.points_period: Period = caps.total_points_period
        self.source_value: Decimal | None = compiled.source_value
        self.amount_capped: bool = compiled.amount_capped
        tender, tracker = caps.tender_amount, caps.tracker
        self.has_tender = tender is not None
        self.tender_modes: list[str] = [] if tender is None else tender.modes
        self.tender_mode_set: frozenset[str] = frozenset(self.tender_modes)
        self.tender_what = "" if tender is None else "tender:" + "+".join(sorted(tender.modes))
        self.tender_limit: Decimal = Decimal(0) if tender is None else tender.limit
        self.tender_period: Period = "lifetime" if tender is None else tender.period
        self.has_tracker = tracker is not None
        self.tracker_field = "" if tracker is None else tracker.field
        self.tracker_what = "" if tracker is None else f"tracker:{tracker.field}"
        self.tracker_limit: Decimal = Decimal(0) if tracker is None else tracker.limit
        self.tracker_period: Period = "lifetime" if tracker is None else tracker.period
        # Counter keys by the activity's local date (`caps.SetScope.points_key`, `caps._key_for`): a key is
        # a function of the set, what it counts, the period and that date (building one costs a few thousand
        # instructions: the period's label, then the key's text).
        self.points_keys: dict[date, str] = {}
        self.tender_keys: dict[date, str] = {}
        self.tracker_keys: dict[date, str] = {}


@dataclass(frozen=True, slots=True)
class SetRun:
    compiled: CompiledRuleSet
    rules: tuple[RuleRun, ...]
    facts: SetFacts
    key_head: tuple[object, ...]
    """(activity, set name): a scope's `key_head` under the runner's default key prefix."""


def _set_runs(program: Program, activity: str) -> tuple[SetRun, ...]:
    plan = rule_plan(program).by_activity.get(activity)
    if not plan:
        return ()
    always = compile_condition("true", activity).holds
    return tuple(
        SetRun(compiled_set, tuple(
            RuleRun(compiled.rule, None if compiled.holds is always else compiled.holds,
                    tuple((action.type, action) for action in compiled.rule.actions))
            for compiled in compiled_set.rules
        ), SetFacts(compiled_set), (activity, compiled_set.name))
        for compiled_set in plan
    )


@dataclass(frozen=True, slots=True)
class Facts:
    program: Program
    zone: ZoneInfo
    version: int
    decimals: int
    strategy: RoundingStrategy
    rounder: Rounder
    """`round_points` with the program's decimals and strategy (`Effects.round`)."""
    lowest_tier: str
    default_expiry: str | None
    reminder_offsets: tuple[int, ...]
    """Distinct reminder offsets (days before expiry), largest first."""
    reminder_horizon: timedelta
    """No reminder of a lot falls due earlier than this before its expiry (zero without reminders)."""
    accrual_rules: bool
    """Whether the program has DelayedAccrual rule sets (run after a batch of conversions)."""
    return_window: timedelta | None
    """How long bills are kept and returnable (None: forever)."""
    redemption_keep: timedelta | None
    """How long redemptions are kept: the reversal window, or longer while limits or conditions count them
    (None: forever)."""
    rule_runs: dict[str, tuple[SetRun, ...]]
    """An activity's rule sets as the runner reads them, filled on first use (`set_runs`)."""
    event_ends: dict[tuple[str | None, str, date], tuple[datetime | None, bool]]
    """Event-date expiries by (code, tier, local event date), filled by `expiry.assign_expiry`."""

    def set_runs(self, activity: str) -> tuple[SetRun, ...]:
        runs = self.rule_runs.get(activity)
        if runs is None:
            runs = self.rule_runs[activity] = _set_runs(self.program, activity)
        return runs


def facts(program: Program) -> Facts:
    cached = program.compiled.get(_KEY)
    if isinstance(cached, Facts) and cached.program is program:
        return cached
    offsets = tuple(sorted(set(program.reminders.days_before), reverse=True))
    retention = program.retention
    lookback = redemption_lookback_days(program)
    reversal = retention.reversal_window_days
    result = Facts(
        program=program,
        zone=program.zone,
        version=program.version,
        decimals=program.rounding.decimals,
        strategy=program.rounding.strategy,
        rounder=rounder(program.rounding.decimals, program.rounding.strategy),
        lowest_tier=program.lowest_tier,
        default_expiry=program.default_expiry,
        reminder_offsets=offsets,
        reminder_horizon=timedelta(days=offsets[0] + 2) if offsets else timedelta(0),
        accrual_rules=bool(program.rule_sets_for("DelayedAccrual")),
        return_window=None if retention.return_window_days is None else timedelta(days=retention.return_window_days),
        redemption_keep=None if reversal is None or lookback is None else timedelta(days=max(reversal, lookback)),
        rule_runs={},
        event_ends={},
    )
    program.compiled[_KEY] = result
    return result
