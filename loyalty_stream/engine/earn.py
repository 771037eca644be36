"""Earning: run the activity's rule sets and allocate points with the named earn conditions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from loyalty_stream.engine import expiry, lifecycle, rules
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.state import ZERO, Bill, BillItem
from loyalty_stream.events import activities as act
from loyalty_stream.program.common import for_tier
from loyalty_stream.program.earn import EarnCondition, FixedAllocation, ProratedAllocation
from loyalty_stream.program.rules import AllocateAction, Rule

HUNDRED = Decimal(100)


def handle_transaction(fx: Effects, activity: act.TransactionAdd) -> None:
    payload = activity.payload
    state = fx.state
    state.bills[payload.bill_number] = Bill(
        bill_number=payload.bill_number, event_id=activity.event_id, event_time=activity.event_time,
        amount=payload.amount,
        items={i.item_id: BillItem(i.item_id, i.sku, i.amount, i.quantity) for i in payload.line_items},
    )
    state.lifetime_purchases += payload.amount
    state.purchase_count += 1
    run_rule_sets(fx, "TransactionAdd", activity)


def handle_registration(fx: Effects, activity: act.Registration) -> None:
    state, payload = fx.state, activity.payload
    state.registered_at = activity.event_time
    state.custom_fields.update(payload.custom_fields)
    state.extended_fields.update(payload.extended_fields)
    state.membership_end = payload.membership_end or state.membership_end
    if payload.tier is not None and payload.tier in {t.name for t in fx.program.tiers}:
        state.tier = payload.tier
    run_rule_sets(fx, "Registration", activity)


def handle_customer_update(fx: Effects, activity: act.CustomerUpdate) -> None:
    state, payload = fx.state, activity.payload
    state.custom_fields.update(payload.custom_fields)
    state.extended_fields.update(payload.extended_fields)
    state.membership_end = payload.membership_end or state.membership_end
    run_rule_sets(fx, "CustomerUpdate", activity)


def handle_engagement(fx: Effects, activity: act.Engagement) -> None:
    fx.outcome.rejected = "engagement events are not supported yet"


def run_rule_sets(fx: Effects, activity_name: str, activity: act.TransactionAdd | act.Registration
                  | act.CustomerUpdate) -> None:
    rules.run_rule_sets(fx, activity_name, activity, EARN_HANDLERS)


def _allocate_action(fx: Effects, action: AllocateAction, rule: Rule, activity: Any, index: int) -> None:
    allocate(fx, fx.program.earn_condition(action.condition), rule, activity)


EARN_HANDLERS: dict[str, rules.ActionHandler] = {"allocate": _allocate_action}


def base_points(condition: EarnCondition, tier: str | None, amount: Decimal) -> Decimal:
    allocation = condition.allocation
    if isinstance(allocation, FixedAllocation):
        return for_tier(allocation.points, tier) or ZERO
    if isinstance(allocation, ProratedAllocation):
        percent = for_tier(allocation.percent, tier) or ZERO
        return amount * percent / HUNDRED
    return ZERO


def allocate(fx: Effects, condition: EarnCondition, rule: Rule, activity: act.TransactionAdd
             | act.Registration | act.CustomerUpdate) -> None:
    amount = activity.payload.amount if isinstance(activity, act.TransactionAdd) else ZERO
    points = fx.round(base_points(condition, fx.state.tier or fx.program.lowest_tier, amount))
    if points <= ZERO:
        return
    delay = condition.delay_days
    expires_at, expiry_code, rolling = expiry.assign_expiry(fx, condition.expiry)
    fx.credit(
        expires_at=expires_at,
        expiry_code=expiry_code,
        rolling=rolling,
        points=points,
        key=(condition.code, rule.name),
        promised=delay is not None,
        available_at=None if delay is None else lifecycle.available_after(fx.at, delay, fx.program.zone),
        condition_code=condition.code,
        rule=rule.name,
        bill_number=activity.payload.bill_number if isinstance(activity, act.TransactionAdd) else None,
    )
