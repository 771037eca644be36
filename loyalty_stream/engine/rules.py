"""Rule-set runner: every rule set of an activity runs; within a set the first rule whose condition holds
runs its actions (an if / else-if chain). Actions are dispatched by type so the activity's own module can
supply the ones only it understands (redeem, convert)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from loyalty_stream.engine.effects import Effects
from loyalty_stream.program.rules import Action, IssueCouponAction, NotifyAction, Rule, RuleSet, UpgradeTierAction

ActionHandler = Callable[[Effects, Any, Rule, Any, int], None]
"""(effects, action, rule, activity, index within the rule) -> None"""


def condition_holds(fx: Effects, rule: Rule, activity: Any) -> bool:
    """Evaluate the rule's `when` expression against the activity and the customer."""
    text = rule.when.strip()
    if text == "true":
        return True
    if text == "false":
        return False
    raise NotImplementedError(f"expression language not available yet: {text!r}")


def first_matching(fx: Effects, rule_set: RuleSet, activity: Any) -> Rule | None:
    for rule in rule_set.rules:
        if condition_holds(fx, rule, activity):
            return rule
    return None


def _notify(fx: Effects, action: NotifyAction, rule: Rule, activity: Any, index: int) -> None:
    fx.notify(action.channel, action.template, (rule.name, index), **action.data)


def _coupon(fx: Effects, action: IssueCouponAction, rule: Rule, activity: Any, index: int) -> None:
    fx.coupon(action.series, rule.name)


def _upgrade(fx: Effects, action: UpgradeTierAction, rule: Rule, activity: Any, index: int) -> None:
    names = [t.name for t in fx.program.tiers]
    if fx.state.tier is None or names.index(action.tier) > names.index(fx.state.tier):
        fx.change_tier(action.tier, f"rule {rule.name}")


COMMON_HANDLERS: dict[str, ActionHandler] = {"notify": _notify, "issue_coupon": _coupon, "upgrade_tier": _upgrade}


def run_actions(fx: Effects, rule: Rule, activity: Any, handlers: Mapping[str, ActionHandler]) -> None:
    for index, action in enumerate(rule.actions):
        handler = handlers.get(action.type) or COMMON_HANDLERS.get(action.type)
        if handler is None:
            raise ValueError(f"action {action.type!r} is not valid for {type(activity).__name__}")
        handler(fx, action, rule, activity, index)


def run_rule_sets(fx: Effects, activity_name: str, activity: Any,
                  handlers: Mapping[str, ActionHandler] | None = None) -> list[Rule]:
    """Run the activity's rule sets; returns the rules that fired, in order."""
    fired = []
    for rule_set in fx.program.rule_sets_for(activity_name):
        rule = first_matching(fx, rule_set, activity)
        if rule is not None:
            run_actions(fx, rule, activity, handlers or {})
            fired.append(rule)
    return fired


__all__ = ["Action", "ActionHandler", "first_matching", "run_actions", "run_rule_sets"]
