"""Load-time checks a program must pass beyond its schema (the document's limitations), and compilation.

`check_program` is the loader's single entry point: it compiles every rule condition into the program's
`RulePlan` (stored in `program.compiled`) and reports every problem at once, each naming the rule set, rule,
action or condition at fault, so an operator fixes a program in one round.
"""

from __future__ import annotations

from collections import defaultdict

from loyalty_stream.program.earn import (
    CustomFieldSource,
    EarnCondition,
    MultiplierAllocation,
    ProratedAllocation,
    RoundUpAllocation,
)
from loyalty_stream.program.model import Program
from loyalty_stream.program.rules import (
    ALLOWED_ACTIONS,
    PLAN_KEY,
    AllocateAction,
    compile_rule_sets,
    rule_where,
)

NO_DELAY_ACTIVITIES = ("Registration", "CustomerUpdate")


def check_program(program: Program) -> list[str]:
    """Every problem found, each naming the rule or condition at fault; empty when the program is sound.

    Side effect: the compiled rule plan is stored in `program.compiled` (the engine never parses text).
    """
    problems: list[str] = []
    if not program.redeem_conditions:
        problems.append("redeem_conditions: at least one redemption strategy is required")
    plan, expression_problems = compile_rule_sets(program)
    problems.extend(expression_problems)
    program.compiled[PLAN_KEY] = plan
    problems.extend(_check_conditions(program))
    problems.extend(_check_rule_sets(program))
    problems.extend(_check_accrual(program))
    return problems


def resolve(program: Program, condition: EarnCondition) -> EarnCondition:
    """The condition whose source decides a multiplier's points (its base), else the condition itself."""
    allocation = condition.allocation
    if isinstance(allocation, MultiplierAllocation):
        return program.earn_condition(allocation.base)
    return condition


def _check_conditions(program: Program) -> list[str]:
    problems = []
    for condition in program.earn_conditions:
        allocation = condition.allocation
        if isinstance(allocation, MultiplierAllocation):
            base = program.earn_condition(allocation.base)
            if isinstance(base.allocation, MultiplierAllocation):
                problems.append(
                    f"earn_conditions[{condition.code}].allocation.base: {base.code!r} is itself a "
                    "multiplier; a multiplier must multiply a plain allocation"
                )
    return problems


def _check_rule_sets(program: Program) -> list[str]:
    problems = []
    for activity, sets in program.rule_sets.items():
        names = [s.name for s in sets]
        for duplicate in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"rule_sets.{activity}: duplicate rule set name {duplicate!r}")
        allowed = ALLOWED_ACTIONS[activity]
        for rule_set in sets:
            set_where = f"rule_sets.{activity}[{rule_set.name}]"
            if rule_set.caps.on_source and activity != "TransactionAdd":
                problems.append(
                    f"{set_where}.caps: source_value, tender_amount and tracker caps apply to "
                    "TransactionAdd only"
                )
            for rule in rule_set.rules:
                for index, action in enumerate(rule.actions):
                    where = f"{rule_where(activity, rule_set, rule)}.actions[{index}]"
                    if action.type not in allowed:
                        problems.append(
                            f"{where}: action {action.type!r} is not available on {activity} "
                            f"(allowed: {', '.join(sorted(allowed))})"
                        )
                    if isinstance(action, AllocateAction):
                        problems.extend(_check_allocate(program, activity, action, where))
    return problems


def _check_allocate(program: Program, activity: str, action: AllocateAction, where: str) -> list[str]:
    problems = []
    if activity != "TransactionAdd" and (action.line_items is not None or action.tender_modes is not None):
        problems.append(f"{where}: line_items and tender_modes apply to TransactionAdd only")
    condition = program.earn_condition(action.condition)
    source = resolve(program, condition).allocation
    if action.line_items is not None:
        if isinstance(source, RoundUpAllocation):
            problems.append(f"{where}: a round_up allocation ({condition.code}) tops up the balance; "
                            "it cannot be split over line items")
        if (
            isinstance(source, ProratedAllocation)
            and isinstance(source.source, CustomFieldSource)
            and not action.line_items.use_proportions
        ):
            problems.append(f"{where}: {condition.code} prorates a bill-level custom field; "
                            "with line items it needs use_proportions: true")
    return problems


def _check_accrual(program: Program) -> list[str]:
    """The document's delayed-accrual limitations, per activity."""
    problems = []
    uses: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
    for activity, sets in program.rule_sets.items():
        for rule_set in sets:
            for rule in rule_set.rules:
                for index, action in enumerate(rule.actions):
                    if isinstance(action, AllocateAction):
                        condition = program.earn_condition(action.condition)
                        label = f"{condition.code} ({rule_where(activity, rule_set, rule)}.actions[{index}])"
                        uses[activity].append((label, condition.delay_days))
    if program.event_points.delay_days is not None or "Engagement" in uses:
        uses["Engagement"].append(("event_points", program.event_points.delay_days))
    for name, allocations in uses.items():
        direct = [label for label, delay in allocations if delay is None]
        delayed = [(label, delay) for label, delay in allocations if delay is not None]
        if delayed and name in NO_DELAY_ACTIVITIES:
            problems.append(
                f"rule_sets.{name}: delayed accrual is not allowed on {name}: "
                + ", ".join(label for label, _ in delayed)
            )
            continue
        if direct and delayed:
            problems.append(
                f"rule_sets.{name}: an activity cannot mix direct allocation ({', '.join(direct)}) "
                f"and delayed accrual ({', '.join(label for label, _ in delayed)})"
            )
        periods = sorted({delay for _, delay in delayed if delay is not None})
        if len(periods) > 1:
            problems.append(
                f"rule_sets.{name}: delayed strategies of one activity must share one delay period, "
                "got " + ", ".join(f"{label}: {delay} days" for label, delay in delayed)
            )
    return problems
