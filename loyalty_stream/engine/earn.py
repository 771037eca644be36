"""Earning: run the activity's rule sets and allocate points with the named earn conditions.

An allocate action goes through one pipeline, whatever its strategy:

1. `allocation.applies` (allocate based on tier / registration field / transaction field);
2. units: the bill, or its eligible line items; the tender unroller keeps the share paid with its modes;
3. exact points on the full source ("desired") and on the source the set's caps allow (tender amounts,
   tracker units, source value);
4. rounding with the program's rounding (`fx.round`), then the action's `max_points` and the set's
   `total_points` room (floored, so a cap is never exceeded by rounding);
5. exact split over the units (`line_items.distribute`), one lot and ledger entry per unit naming its line
   item, with `desired_amount` on entries a cap cut.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from loyalty_stream.engine import allocation, expiry, lifecycle, line_items, rules
from loyalty_stream.engine.caps import SetScope
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.line_items import ONE, Unit
from loyalty_stream.engine.rounding import quantum, round_down_to
from loyalty_stream.engine.state import ZERO, Bill, BillItem, Lot
from loyalty_stream.events import activities as act
from loyalty_stream.program.earn import EarnCondition
from loyalty_stream.program.rules import AllocateAction, Rule


def handle_transaction(fx: Effects, activity: act.TransactionAdd) -> None:
    """A bill is credited once: the same bill number again under a new event id (a POS retry, a re-export)
    is rejected, as it would credit twice and take the bill the returns are tied to away from its lots."""
    payload = activity.payload
    state = fx.state
    known = state.bills.get(payload.bill_number)
    if known is not None:
        fx.outcome.rejected = (f"payload.bill_number: bill {payload.bill_number!r} was already credited by event "
                               f"{known.event_id!r}; a bill is credited once")
        return
    state.bills[payload.bill_number] = Bill(
        bill_number=payload.bill_number, event_id=activity.event_id, event_time=activity.event_time,
        amount=payload.amount,
        items={i.item_id: BillItem(i.item_id, i.sku, i.amount, i.quantity) for i in payload.line_items},
    )
    state.lifetime_purchases += payload.amount
    state.purchase_count += 1
    rules.run_rule_sets(fx, "TransactionAdd", activity, EARN_HANDLERS)


def handle_registration(fx: Effects, activity: act.Registration) -> None:
    state, payload = fx.state, activity.payload
    state.registered_at = activity.event_time
    state.custom_fields.update(payload.custom_fields)
    state.extended_fields.update(payload.extended_fields)
    state.membership_end = payload.membership_end or state.membership_end
    if payload.tier is not None and payload.tier in {t.name for t in fx.program.tiers}:
        state.tier = payload.tier
    rules.run_rule_sets(fx, "Registration", activity, EARN_HANDLERS)


def handle_customer_update(fx: Effects, activity: act.CustomerUpdate) -> None:
    state, payload = fx.state, activity.payload
    state.custom_fields.update(payload.custom_fields)
    state.extended_fields.update(payload.extended_fields)
    state.membership_end = payload.membership_end or state.membership_end
    rules.run_rule_sets(fx, "CustomerUpdate", activity, EARN_HANDLERS)


def handle_engagement(fx: Effects, activity: act.Engagement) -> None:
    """Event points (catalogue value x count, origin "event", condition `event:<name>`), then the
    Engagement rule sets. An event outside the catalogue is rejected before anything changes."""
    payload = activity.payload
    settings = fx.program.event_points
    per_event = settings.points_for(payload.event_name)
    if per_event is None:
        fx.outcome.rejected = (
            f"payload.event_name: unknown event {payload.event_name!r}; not in the event-points catalogue"
        )
        return
    points = fx.round(per_event * payload.count)
    if points > ZERO:
        delay = settings.delay_days
        expires_at, expiry_code, rolling = expiry.assign_expiry(fx, settings.expiry)
        fx.credit(
            points=points,
            key=("event", payload.event_name),
            promised=delay is not None,
            available_at=None if delay is None else lifecycle.available_after_activity(fx, delay),
            expires_at=expires_at,
            expiry_code=expiry_code,
            rolling=rolling,
            origin="event",
            condition_code=f"event:{payload.event_name}",
        )
    rules.run_rule_sets(fx, "Engagement", activity, EARN_HANDLERS)


def _allocate_action(fx: Effects, action: AllocateAction, rule: Rule, activity: Any, index: int) -> None:
    scope = fx.scope if isinstance(fx.scope, SetScope) else None
    allocate_action(fx, action, rule, activity, index, scope)


EARN_HANDLERS: dict[str, rules.ActionHandler] = {"allocate": _allocate_action}
"""Action handlers of the earning activities (and TierChange); `notify` etc. are the runner's own."""


def allocate(fx: Effects, condition: EarnCondition, rule: Rule, activity: Any) -> list[Lot]:
    """Allocate one condition outside any rule set (no caps): tools and other modules."""
    return allocate_action(fx, AllocateAction(condition=condition.code), rule, activity, 0, None)


Sources = tuple[Decimal, Decimal, list[Decimal], list[Decimal]]


def _sources(fx: Effects, action: AllocateAction, info: allocation.EarnInfo, activity: Any, units: list[Unit],
             scope: SetScope | None, where: Callable[[], str]) -> Sources | None:
    """(desired exact points, capped exact points, desired weights, capped weights) over `units`."""
    program, state, at = fx.program, fx.state, fx.at
    tier = state.tier or program.lowest_tier
    condition = info.condition

    def points(source: Decimal) -> Decimal:
        return allocation.points_on(program, condition, tier, source, state, activity, at)

    kind = info.kind
    source_cap = scope.caps.source_value if scope is not None else None
    amounts = [u.amount for u in units]
    proportional = action.line_items is None or action.line_items.use_proportions
    if kind == "field":
        try:
            value = allocation.custom_field_source(program, condition, state, activity)
        except allocation.NotAwardable as exc:
            fx.outcome.skipped.append(f"{where()}: {exc}; no points allocated")
            return None
        capped_value = value if source_cap is None else min(value, source_cap)
        return points(value), points(capped_value), amounts, amounts
    if kind == "none":
        if proportional:
            fixed = points(ZERO)
            return fixed, fixed, amounts, amounts
        each = [points(ZERO) for _ in units]
        return sum(each, ZERO), sum(each, ZERO), each, each
    modes = action.tender_modes
    if scope is None or not scope.amount_caps(fx):
        allowed = amounts  # no tender or tracker cap: every factor is 1 (and x * 1 is x, exponent included)
    else:
        allowed = [u.amount * scope.factor(fx, u, modes) for u in units]
    allowed_total = sum(allowed, ZERO)
    scale = ONE
    if source_cap is not None and allowed_total > source_cap:
        scale = source_cap / allowed_total
    if proportional:
        total = sum(amounts, ZERO)
        desired_points = points(total)
        if allowed_total == total and scale == ONE:
            return desired_points, desired_points, amounts, amounts
        return desired_points, points(allowed_total * scale), amounts, allowed
    desired = [points(a) for a in amounts]
    capped = [points(a * scale) for a in allowed]
    return sum(desired, ZERO), sum(capped, ZERO), desired, capped


def allocate_action(fx: Effects, action: AllocateAction, rule: Rule, activity: Any, index: int,
                    scope: SetScope | None) -> list[Lot]:
    """Run one allocate action (see the module docstring); returns the lots credited."""
    program, state = fx.program, fx.state
    info = allocation.earn_info(program, action.condition)
    condition = info.condition
    if not allocation.applies(condition, state, activity):
        return []

    def where() -> str:  # only built when something is recorded
        owner = f"{scope.compiled.where}.rules[{rule.name}]" if scope is not None else f"rule {rule.name}"
        return f"{owner}.actions[{index}] {condition.code}"

    payload = activity.payload if isinstance(activity, act.TransactionAdd) else None
    units = line_items.units_for(action, payload)
    if not units:
        return []
    if payload is not None and action.tender_modes is not None:
        paid = line_items.tender_fraction(payload, action.tender_modes)
        if paid <= ZERO:
            return []
        for unit in units:
            unit.amount *= paid
    sources = _sources(fx, action, info, activity, units, scope, where)
    if sources is None:
        return []
    desired_exact, capped_exact, desired_weights, capped_weights = sources
    decimals = program.rounding.decimals
    desired = fx.round(desired_exact)
    awarded = min(fx.round(capped_exact), desired)
    cut_by = []
    if awarded < desired:
        cut_by.append("source caps")
    options = action.line_items
    if options is not None and options.max_points is not None and awarded > options.max_points:
        awarded = round_down_to(options.max_points, decimals)
        cut_by.append("max_points")
    room = scope.points_room(fx) if scope is not None else None
    if room is not None and awarded > room:
        awarded = round_down_to(room, decimals)
        cut_by.append("total_points cap")
    if desired <= ZERO:
        return []
    if awarded <= ZERO:
        fx.outcome.skipped.append(f"{where()}: {desired} points capped to 0 by {', '.join(cut_by)}")
        return []
    if len(units) == 1:
        desired_shares, awarded_shares = [desired], [awarded]
    else:
        step = quantum(decimals)
        desired_shares = line_items.distribute(desired, desired_weights, step)
        if awarded == desired and capped_weights is desired_weights:
            awarded_shares = desired_shares  # the same split (distribute is a function of its inputs)
        else:
            awarded_shares = line_items.distribute(awarded, capped_weights, step)
    delay = condition.delay_days
    available_at = None if delay is None else lifecycle.available_after_activity(fx, delay)
    bill_number = payload.bill_number if payload is not None else None
    prefix = (*scope.key_prefix, scope.name) if scope is not None else ()
    # Every lot of one action shares the condition and the event time, hence one expiry for all of them.
    expires_at, expiry_code, rolling = expiry.assign_expiry(fx, condition.expiry)
    lots = []
    position = str(index)  # id parts as text (None as ""): what `derive_id` makes of them, without converting
    for unit, want, got in zip(units, desired_shares, awarded_shares, strict=True):
        if got <= ZERO:
            continue
        lots.append(fx.credit(
            points=got,
            key=(*prefix, rule.name, position, condition.code, unit.item_id or ""),
            promised=delay is not None,
            available_at=available_at,
            expires_at=expires_at,
            expiry_code=expiry_code,
            rolling=rolling,
            condition_code=condition.code,
            rule=rule.name,
            bill_number=bill_number,
            line_item_id=unit.item_id,
            desired_amount=want if want > got else None,
        ))
    if scope is not None:
        scope.charge_points(fx, awarded, lots)
    return lots
