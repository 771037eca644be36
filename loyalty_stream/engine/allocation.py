"""Allocation strategies: who an earn condition applies to, and the exact (unrounded) points it gives.

Pure arithmetic on Decimals; rounding, caps and splitting over line items happen in `engine.earn`, so each
strategy is a few lines that read like the document's definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Final, Literal

from loyalty_stream.engine.state import ZERO, CustomerState
from loyalty_stream.events.activities import TransactionAdd, TransactionPayload
from loyalty_stream.program.common import for_tier
from loyalty_stream.program.earn import (
    HUNDRED,
    CustomFieldSource,
    EarnCondition,
    FixedAllocation,
    MultiplierAllocation,
    ProratedAllocation,
    RoundUpAllocation,
    StepAllocation,
    window_contains,
)
from loyalty_stream.program.expressions import field_value
from loyalty_stream.program.model import Program

SourceKind = Literal["amount", "field", "none"]


class NotAwardable(Exception):
    """The condition cannot award on this activity (e.g. a string custom field); the message says why."""


def _same(value: Any, wanted: Any) -> bool:
    """Exact field comparison: 25 == Decimal(25), but never "25" == 25 nor True == 1."""
    a, b = field_value(value), field_value(wanted)
    return type(a) is type(b) and a == b


def transaction_field(payload: TransactionPayload, name: str) -> Any:
    """A bill attribute (`channel`, `store`, `bill_number`) or else a bill custom/extended field."""
    if name in ("channel", "store", "bill_number"):
        return getattr(payload, name)
    if name in payload.custom_fields:
        return payload.custom_fields[name]
    return payload.extended_fields.get(name)


def applies(condition: EarnCondition, state: CustomerState, activity: Any) -> bool:
    """Allocate based on: tier (always; the per-tier value decides), a registration field, a bill field."""
    based = condition.based_on
    if based.kind == "tier":
        return True
    assert based.field is not None
    if based.kind == "registration_field":
        return _same(state.custom_fields.get(based.field), based.equals)
    if not isinstance(activity, TransactionAdd):
        return False
    return _same(transaction_field(activity.payload, based.field), based.equals)


_OTHER: Final = 0
_FIXED: Final = 1
_PRORATED: Final = 2
_STEP: Final = 3
_HUNDRED: Final = Decimal(100)  # (`HUNDRED` of the program module is a dict lookup per use under mypyc)


@dataclass(frozen=True, slots=True)
class EarnInfo:
    """What the hot path needs about a condition, computed once per program."""

    condition: EarnCondition
    kind: SourceKind
    base: EarnCondition | None
    """A multiplier's base condition."""
    shape: int = _OTHER
    """_FIXED, _PRORATED, _STEP: `points_for` computes from the fields below; _OTHER: `points_on` does."""
    value: Decimal | None = None
    """The allocation's points (fixed, step) or percent (prorated) when the same for every tier."""
    values: dict[str, Decimal] | None = None
    """... or per tier (a tier left out gets none)."""
    step: Decimal = _HUNDRED
    rounding: str = ROUND_FLOOR
    """A step allocation's step and how it counts steps."""


def _info(condition: EarnCondition, kind: SourceKind, base: EarnCondition | None) -> EarnInfo:
    """The condition's facts, its allocation's values read out of the pydantic model (once per program)."""
    allocation = condition.allocation
    shape, tiered, step, rounding = _OTHER, None, _HUNDRED, ROUND_FLOOR
    if isinstance(allocation, FixedAllocation):
        shape, tiered = _FIXED, allocation.points
    elif isinstance(allocation, ProratedAllocation):
        shape, tiered = _PRORATED, allocation.percent
    elif isinstance(allocation, StepAllocation):
        shape, tiered, step = _STEP, allocation.points, allocation.step
        rounding = ROUND_FLOOR if allocation.count == "full" else ROUND_CEILING
    return EarnInfo(condition, kind, base, shape, tiered if isinstance(tiered, Decimal) else None,
                    tiered if isinstance(tiered, dict) else None, step, rounding)


_INFO_KEY: Final = "earn_info"


def earn_info(program: Program, code: str) -> EarnInfo:
    """Per-condition facts cached in `program.compiled` (plain dict lookups on the hot path), with the program
    they are for: a copied program (`model_copy` shares `compiled`) with other conditions gets its own."""
    owned = program.compiled.get(_INFO_KEY)
    if owned is None or owned[0] is not program:
        table: dict[str, EarnInfo] = {}
        for condition in program.earn_conditions:
            allocation = condition.allocation
            base = None
            if isinstance(allocation, MultiplierAllocation):
                base = program.earn_condition(allocation.base)
            table[condition.code] = _info(condition, source_kind(program, condition), base)
        owned = program.compiled[_INFO_KEY] = (program, table)
    info: EarnInfo = owned[1][code]
    return info


def resolved(program: Program, condition: EarnCondition) -> EarnCondition:
    """A multiplier's points follow its base condition's source; anything else is its own source."""
    allocation = condition.allocation
    if isinstance(allocation, MultiplierAllocation):
        return program.earn_condition(allocation.base)
    return condition


def source_kind(program: Program, condition: EarnCondition) -> SourceKind:
    """What a condition's points are computed on: an amount, a custom field's value, or nothing."""
    allocation = resolved(program, condition).allocation
    if isinstance(allocation, StepAllocation):
        return "amount"
    if isinstance(allocation, ProratedAllocation):
        return "field" if isinstance(allocation.source, CustomFieldSource) else "amount"
    return "none"


def custom_field_source(program: Program, condition: EarnCondition, state: CustomerState,
                        activity: Any) -> Decimal:
    """The integer a prorated condition computes on; NotAwardable (naming the field) for anything else."""
    allocation = resolved(program, condition).allocation
    assert isinstance(allocation, ProratedAllocation) and isinstance(allocation.source, CustomFieldSource)
    source = allocation.source
    if source.scope == "registration":
        fields: Any = state.custom_fields
    else:
        payload = getattr(activity, "payload", None)
        fields = getattr(payload, "custom_fields", None) or {}
    raw = fields.get(source.custom_field)
    where = f"{source.scope} custom field {source.custom_field!r}"
    if raw is None:
        raise NotAwardable(f"{where} is missing")
    value = field_value(raw)
    if not isinstance(value, Decimal) or value != value.to_integral_value():
        raise NotAwardable(f"{where} is {raw!r}, not an integer; prorating needs an integer value")
    return value


def points_for(program: Program, info: EarnInfo, tier: str, source: Decimal, state: CustomerState,
               activity: Any, at: Any) -> Decimal:
    """`points_on(program, info.condition, ...)` from the condition's facts taken once per program (no pydantic
    attribute reads, no isinstance against pydantic classes, which go through ABCMeta): the same arithmetic."""
    shape = info.shape
    if shape == _OTHER:
        return points_on(program, info.condition, tier, source, state, activity, at)
    values = info.values
    return _shaped(shape, info.value if values is None else values.get(tier), source, info.step, info.rounding)


def _shaped(shape: int, value: Decimal | None, source: Decimal, step: Decimal, rounding: str) -> Decimal:
    """The points of a fixed, prorated or step allocation whose value for the tier is `value` (None: the tier
    gets none): the arithmetic `points_on` and `points_for` share."""
    if shape == _PRORATED:
        return ZERO if value is None else source * value / _HUNDRED
    if shape == _FIXED:
        return value or ZERO
    if value is None or source <= ZERO:
        return ZERO
    return (source / step).to_integral_value(rounding=rounding) * value


def points_on(program: Program, condition: EarnCondition, tier: str, source: Decimal, state: CustomerState,
              activity: Any, at: Any) -> Decimal:
    """Exact points `condition` gives for `source` (an amount or a field value) to a customer in `tier`."""
    allocation = condition.allocation
    if isinstance(allocation, FixedAllocation):
        return _shaped(_FIXED, for_tier(allocation.points, tier), source, _HUNDRED, ROUND_FLOOR)
    if isinstance(allocation, ProratedAllocation):
        return _shaped(_PRORATED, for_tier(allocation.percent, tier), source, _HUNDRED, ROUND_FLOOR)
    if isinstance(allocation, StepAllocation):
        mode = ROUND_FLOOR if allocation.count == "full" else ROUND_CEILING
        return _shaped(_STEP, for_tier(allocation.points, tier), source, allocation.step, mode)
    if isinstance(allocation, MultiplierAllocation):
        percent = for_tier(allocation.percent, tier)
        if percent is None or not window_contains(allocation, at):
            return ZERO
        base = earn_info(program, condition.code).base
        assert base is not None
        if not applies(base, state, activity):
            return ZERO
        return points_on(program, base, tier, source, state, activity, at) * (percent - HUNDRED) / HUNDRED
    if isinstance(allocation, RoundUpAllocation):
        return round_up(allocation, tier, state.current)
    raise TypeError(f"unknown allocation {type(allocation).__name__}")  # pragma: no cover


def round_up(allocation: RoundUpAllocation, tier: str, balance: Decimal) -> Decimal:
    """Points that lift `balance` to the next multiple of `round_to` of the first range containing it."""
    ranges = allocation.ranges if isinstance(allocation.ranges, list) else allocation.ranges.get(tier, [])
    for r in ranges:
        if r.from_points <= balance <= r.to_points:
            target = (balance / r.round_to).to_integral_value(rounding=ROUND_CEILING) * r.round_to
            return target - balance
    return ZERO
