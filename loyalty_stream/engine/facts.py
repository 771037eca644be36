"""What the engine's hot path needs to know about a program, derived once per program object.

Programs are immutable, so everything here is computed on first use and kept in `Program.compiled` (plain
attribute reads instead of pydantic lookups and re-derivations on every activity). The cache remembers the
program it was computed for: a copied program (`model_copy` shares `compiled`) computes its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final
from zoneinfo import ZoneInfo

from loyalty_stream.engine.rounding import Rounder, RoundingStrategy, rounder
from loyalty_stream.program.model import Program
from loyalty_stream.program.retention import redemption_lookback_days

_KEY: Final = "engine_facts"


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
        reminder_offsets=offsets,
        reminder_horizon=timedelta(days=offsets[0] + 2) if offsets else timedelta(0),
        accrual_rules=bool(program.rule_sets_for("DelayedAccrual")),
        return_window=None if retention.return_window_days is None else timedelta(days=retention.return_window_days),
        redemption_keep=None if reversal is None or lookback is None else timedelta(days=max(reversal, lookback)),
    )
    program.compiled[_KEY] = result
    return result
