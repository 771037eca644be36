"""Rule-set runner: every rule set of an activity runs; within a set the first rule whose condition holds
runs its actions (an if / else-if chain). Actions are dispatched by type so the activity's own module can
supply the ones only it understands (redeem, convert).

Conditions come precompiled from the program's `RulePlan` (see `program.rules`); one evaluation environment
is built per activity and shared by every rule, so a rule costs a few closure calls. While a set's actions
run, `fx.scope` holds its `SetScope` (caps, output-id prefix).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from loyalty_stream.engine.caps import SetScope
from loyalty_stream.engine.effects import Effects
from loyalty_stream.program.expressions import Env, compile_condition
from loyalty_stream.program.rules import (
    Action,
    IssueCouponAction,
    NotifyAction,
    Rule,
    RuleSet,
    UpgradeTierAction,
    rule_plan,
)

ActionHandler = Callable[[Effects, Any, Rule, Any, int], None]
"""(effects, action, rule, activity, index within the rule) -> None"""


def environment(fx: Effects, activity: Any, activity_name: str = "") -> Env:
    return Env(fx.state, activity, fx.program, fx.at, activity_name)


def condition_holds(fx: Effects, rule: Rule, activity: Any, activity_name: str = "") -> bool:
    """Evaluate the rule's compiled `when` against the activity and the customer.

    A rule outside the program's plan (built by hand) is compiled on the spot for the activity's type.
    """
    compiled = rule_plan(fx.program).by_rule.get(id(rule))
    if compiled is not None and compiled.rule is rule:
        holds = compiled.holds
    else:
        holds = compile_condition(rule.when, activity_name or type(activity).__name__).holds
    return holds(environment(fx, activity, activity_name))


def first_matching(fx: Effects, rule_set: RuleSet, activity: Any) -> Rule | None:
    for rule in rule_set.rules:
        if condition_holds(fx, rule, activity):
            return rule
    return None


def _output_key(fx: Effects, rule: Rule, index: int) -> tuple[object, ...]:
    """Ids of notifications and coupons: unique across sets (and repeated tier changes) of one activity."""
    scope = fx.scope
    if isinstance(scope, SetScope):  # the index as text, as `derive_id` writes it (text parts are cheaper)
        return (*scope.key_head, rule.name, str(index))
    return (rule.name, str(index))


def _notify(fx: Effects, action: NotifyAction, rule: Rule, activity: Any, index: int) -> None:
    fx.notify(action.channel, action.template, _output_key(fx, rule, index), dict(action.data))


def _coupon(fx: Effects, action: IssueCouponAction, rule: Rule, activity: Any, index: int) -> None:
    scope = fx.scope
    fx.coupon(action.series, rule.name, _output_key(fx, rule, index) if isinstance(scope, SetScope) else ())


def _upgrade(fx: Effects, action: UpgradeTierAction, rule: Rule, activity: Any, index: int) -> None:
    names = [t.name for t in fx.program.tiers]
    if fx.state.tier is None or names.index(action.tier) > names.index(fx.state.tier):
        fx.change_tier(action.tier, f"rule {rule.name}")


COMMON_HANDLERS: Final[dict[str, ActionHandler]] = {
    "notify": _notify, "issue_coupon": _coupon, "upgrade_tier": _upgrade,
}


def run_actions(fx: Effects, rule: Rule, activity: Any, handlers: Mapping[str, ActionHandler]) -> None:
    for index, action in enumerate(rule.actions):
        handler = handlers.get(action.type) or COMMON_HANDLERS.get(action.type)
        if handler is None:
            raise ValueError(f"action {action.type!r} is not valid for {type(activity).__name__}")
        handler(fx, action, rule, activity, index)


_NO_HANDLERS: Final[dict[str, ActionHandler]] = {}


def run_rule_sets(fx: Effects, activity_name: str, activity: Any,
                  handlers: dict[str, ActionHandler] | None = None,
                  key_prefix: tuple[object, ...] | None = None) -> list[Rule]:
    """Run the activity's rule sets; returns the rules that fired, in order.

    `key_prefix` keeps output ids apart when one activity runs the same sets twice (two tier changes).
    The sets come from `Facts.set_runs` (the program's plan with conditions and action types read out once).
    """
    runs = fx.known.set_runs(activity_name)
    if not runs:
        return []
    # The environment is built on the first condition (sets of unconditional rules need none), from what
    # `environment` reads now, before any action runs.
    env: Env | None = None
    state, program, at = fx.state, fx.program, fx.at
    prefix = key_prefix or (activity_name,)
    actions = _NO_HANDLERS if handlers is None else handlers
    fired = []
    outer = fx.scope
    try:
        for run in runs:
            for rule_run in run.rules:
                holds = rule_run.holds
                if holds is None:
                    break
                if env is None:
                    env = Env(state, activity, program, at, activity_name)
                if holds(env):
                    break
            else:
                continue
            rule = rule_run.rule
            scope = SetScope(run.compiled, activity, prefix, info=run.facts,
                             key_head=None if key_prefix else run.key_head)
            fx.scope = scope
            for index, (action_type, action) in enumerate(rule_run.actions):
                handler = actions.get(action_type) or COMMON_HANDLERS.get(action_type)
                if handler is None:
                    raise ValueError(f"action {action_type!r} is not valid for {type(activity).__name__}")
                handler(fx, action, rule, activity, index)
            scope.close(fx)
            fired.append(rule)
    finally:
        fx.scope = outer
    return fired


__all__ = ["Action", "ActionHandler", "condition_holds", "first_matching", "run_actions", "run_rule_sets"]
