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
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from loyalty_stream.engine import allocation, expiry, lifecycle, line_items, rules
from loyalty_stream.engine.allocation import points_for
from loyalty_stream.engine.caps import SetScope
from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.line_items import ONE, Unit
from loyalty_stream.engine.rounding import quantum, round_down_to
from loyalty_stream.engine.state import ZERO, Bill, BillItem, Lot
from loyalty_stream.events import activities as act
from loyalty_stream.events.activities import TransactionAdd, TransactionPayload
from loyalty_stream.program.earn import EarnCondition
from loyalty_stream.program.model import Program
from loyalty_stream.program.rules import AllocateAction, LineItemOptions, Rule


def handle_transaction(fx: Effects, activity: act.TransactionAdd) -> None:
    """A bill is credited once: the same bill number again under a new event id (a POS retry, a re-export)
    is rejected, as it would credit twice and take the bill the returns are tied to away from its lots."""
    payload = activity.payload
    bill_number, amount = payload.bill_number, payload.amount  # (each a generic attribute read: once)
    state = fx.state
    known = state.bills.get(bill_number)
    if known is not None:
        fx.outcome.rejected = (f"payload.bill_number: bill {bill_number!r} was already credited by event "
                               f"{known.event_id!r}; a bill is credited once")
        return
    rows = line_items.item_rows_of(fx, payload)  # (the actions earning on line items read them again)
    state.bills[bill_number] = Bill(
        bill_number=bill_number, event_id=fx.event_id, event_time=fx.time,
        amount=amount,
        items={row[0]: BillItem(row[0], row[3], row[1], row[2].quantity) for row in rows},
    )
    state.lifetime_purchases += amount
    _LAST_BILL.keep(activity, payload, bill_number, amount)  # what the bill's allocate actions read
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


class _LastBill:
    """The last bill's activity (held, so its identity stays its own) and the payload fields every allocate
    action of it reads: the activity is frozen, and its actions run one after another, so an identity test
    replaces a generic attribute read of a pydantic model per field and action."""

    __slots__ = ("activity", "amount", "bill_number", "payload")

    def __init__(self) -> None:
        self.activity: TransactionAdd | None = None
        self.payload: TransactionPayload | None = None
        self.bill_number: str | None = None
        self.amount = ZERO

    def keep(self, activity: TransactionAdd, payload: TransactionPayload, bill_number: str, amount: Decimal
             ) -> None:
        self.activity, self.payload, self.bill_number, self.amount = activity, payload, bill_number, amount


_LAST_BILL: Final = _LastBill()


def _allocate_action(fx: Effects, action: AllocateAction, rule: Rule, activity: Any, index: int) -> None:
    scope = fx.scope if isinstance(fx.scope, SetScope) else None
    allocate_action(fx, action, rule, activity, index, scope)


EARN_HANDLERS: Final[dict[str, rules.ActionHandler]] = {"allocate": _allocate_action}
"""Action handlers of the earning activities (and TierChange); `notify` etc. are the runner's own."""


def allocate(fx: Effects, condition: EarnCondition, rule: Rule, activity: Any) -> list[Lot]:
    """Allocate one condition outside any rule set (no caps): tools and other modules."""
    return allocate_action(fx, AllocateAction(condition=condition.code), rule, activity, 0, None)


Sources = tuple[Decimal, Decimal, list[Decimal], list[Decimal]]


@dataclass(frozen=True, slots=True)
class ActionPlan:
    """What `allocate_action` reads of an action, its rule and its earn condition: program data only, so taken
    once per program instead of through pydantic attribute reads on every activity (`action_plan`)."""

    action: AllocateAction
    rule: Rule
    index: int
    info: allocation.EarnInfo
    condition: EarnCondition
    code: str
    always_applies: bool
    """Allocated based on tier: `allocation.applies` holds whatever the customer and the activity."""
    options: LineItemOptions | None
    filtered: bool
    """`options.filtered`: a bill without line items earns nothing (the filter matches no item)."""
    proportional: bool
    max_points: Decimal | None
    tender_modes: list[str] | None
    delay_days: int | None
    expiry: str | None
    key_head: tuple[str, str, str]
    """(rule name, index as text, condition code): the lot key after the scope's prefix, before the item."""
    key_bill: tuple[str, str, str, str]
    """`key_head` and the whole bill's item ("", as `derive_id` writes None): a whole-bill lot's key tail."""


_PLANS_KEY: Final = "earn_action_plans"


class _LastPlans:
    """The last program's plan table and the program (held, so its identity stays its own): the actions of
    an activity, and the activities of a batch, mostly share one program (immutable, its table is built once),
    and an identity test costs far less than reading `program.compiled` (a pydantic model's attribute) and
    looking the table up in it."""

    __slots__ = ("plans", "program")

    def __init__(self) -> None:
        self.program: Program | None = None
        self.plans: dict[int, ActionPlan] = {}


_LAST_PLANS: Final = _LastPlans()


def action_plan(program: Program, action: AllocateAction, rule: Rule, index: int) -> ActionPlan:
    """The plan of one of the program's allocate actions, from a table built once per program (by action
    identity, checked: a copied program shares its actions). An action outside the program's rule sets (built
    by hand, `allocate`) gets a plan built on the spot, not kept."""
    last = _LAST_PLANS
    if last.program is not program:
        table: tuple[Program, dict[int, ActionPlan]] | None = program.compiled.get(_PLANS_KEY)
        if table is None or table[0] is not program:
            table = program.compiled[_PLANS_KEY] = (program, _plans(program))
        last.program, last.plans = program, table[1]
    plan = last.plans.get(id(action))
    if plan is not None and plan.action is action and plan.rule is rule and plan.index == index:
        return plan
    return _build_plan(program, action, rule, index)


def _plans(program: Program) -> dict[int, ActionPlan]:
    plans = {}
    for sets in program.rule_sets.values():
        for rule_set in sets:
            for rule in rule_set.rules:
                for index, action in enumerate(rule.actions):
                    if isinstance(action, AllocateAction):
                        plans[id(action)] = _build_plan(program, action, rule, index)
    return plans


def _build_plan(program: Program, action: AllocateAction, rule: Rule, index: int) -> ActionPlan:
    info = allocation.earn_info(program, action.condition)
    condition = info.condition
    options = action.line_items
    return ActionPlan(
        action=action, rule=rule, index=index, info=info, condition=condition,
        code=condition.code, always_applies=condition.based_on.kind == "tier", options=options,
        filtered=options is not None and options.filtered,
        proportional=options is None or options.use_proportions,
        max_points=None if options is None else options.max_points,
        tender_modes=action.tender_modes, delay_days=condition.delay_days, expiry=condition.expiry,
        key_head=(rule.name, str(index), condition.code), key_bill=(rule.name, str(index), condition.code, ""),
    )


def _total(values: list[Decimal]) -> Decimal:
    """`sum(values, ZERO)` (the same additions in the same order) without the generic call to the builtin."""
    total = ZERO
    for value in values:
        total += value
    return total


def _sources(fx: Effects, plan: ActionPlan, activity: Any, units: list[Unit], scope: SetScope | None,
             where: Callable[[], str]) -> Sources | None:
    """(desired exact points, capped exact points, desired weights, capped weights) over `units`."""
    program, state, at = fx.program, fx.state, fx.at
    tier = state.tier or fx.known.lowest_tier
    info = plan.info
    kind = info.kind
    source_cap = scope.info.source_value if scope is not None else None
    amounts = [u.amount for u in units]
    proportional = plan.proportional
    if kind == "field":
        try:
            value = allocation.custom_field_source(program, info.condition, state, activity)
        except allocation.NotAwardable as exc:
            fx.outcome.skipped.append(f"{where()}: {exc}; no points allocated")
            return None
        capped_value = value if source_cap is None else min(value, source_cap)
        return (points_for(program, info, tier, value, state, activity, at),
                points_for(program, info, tier, capped_value, state, activity, at), amounts, amounts)
    if kind == "none":
        if proportional:
            fixed = points_for(program, info, tier, ZERO, state, activity, at)
            return fixed, fixed, amounts, amounts
        each = [points_for(program, info, tier, ZERO, state, activity, at) for _ in units]
        return _total(each), _total(each), each, each
    if scope is None or not scope.amount_caps(fx):
        allowed = amounts  # no tender or tracker cap: every factor is 1 (and x * 1 is x, exponent included)
    else:
        modes = plan.tender_modes
        allowed = [u.amount * scope.factor(fx, u, modes) for u in units]
    allowed_total = _total(allowed)
    scale = ONE
    if source_cap is not None and allowed_total > source_cap:
        scale = source_cap / allowed_total
    if proportional:
        total = allowed_total if allowed is amounts else _total(amounts)
        desired_points = points_for(program, info, tier, total, state, activity, at)
        if scale == ONE and (allowed is amounts or allowed_total == total):
            return desired_points, desired_points, amounts, amounts
        return (desired_points, points_for(program, info, tier, allowed_total * scale, state, activity, at),
                amounts, allowed)
    desired = [points_for(program, info, tier, a, state, activity, at) for a in amounts]
    capped = [points_for(program, info, tier, a * scale, state, activity, at) for a in allowed]
    return _total(desired), _total(capped), desired, capped


def allocate_action(fx: Effects, action: AllocateAction, rule: Rule, activity: Any, index: int,
                    scope: SetScope | None) -> list[Lot]:
    """Run one allocate action (see the module docstring); returns the lots credited."""
    program, state = fx.program, fx.state
    plan = action_plan(program, action, rule, index)
    condition = plan.condition
    if not plan.always_applies and not allocation.applies(condition, state, activity):
        return []

    def where() -> str:  # only built when something is recorded
        owner = f"{scope.compiled.where}.rules[{rule.name}]" if scope is not None else f"rule {rule.name}"
        return f"{owner}.actions[{index}] {plan.code}"

    payload: TransactionPayload | None = None
    bill_number: str | None = None
    options = plan.options
    if isinstance(activity, TransactionAdd):
        last = _LAST_BILL
        bill = last.payload
        if last.activity is not activity or bill is None:
            bill = activity.payload
            last.keep(activity, bill, bill.bill_number, bill.amount)
        payload, bill_number = bill, last.bill_number
        if options is None:  # (what `units_for` gives: the whole bill)
            units = [Unit(None, last.amount)]
        else:
            units = line_items.units_for(options, plan.filtered, bill, line_items.item_rows_of(fx, bill))
    else:
        units = line_items.units_for(options, plan.filtered, None)
    if not units:
        return []
    tender_modes = plan.tender_modes
    if payload is not None and tender_modes is not None:
        paid = line_items.tender_fraction(payload, tender_modes)
        if paid <= ZERO:
            return []
        for unit in units:
            unit.amount *= paid
    sources = _sources(fx, plan, activity, units, scope, where)
    if sources is None:
        return []
    desired_exact, capped_exact, desired_weights, capped_weights = sources
    decimals = fx.known.decimals
    desired = fx.round(desired_exact)
    cut_by = []
    awarded = desired
    if capped_exact is not desired_exact:  # (else the same rounding: nothing to compare)
        awarded = min(fx.round(capped_exact), desired)
        if awarded < desired:
            cut_by.append("source caps")
    max_points = plan.max_points
    if max_points is not None and awarded > max_points:
        awarded = round_down_to(max_points, decimals)
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
        desired_shares = [desired]
        awarded_shares = desired_shares if awarded is desired else [awarded]  # (uncut: one list, see below)
    else:
        step = quantum(decimals)
        desired_shares = line_items.distribute(desired, desired_weights, step)
        if awarded == desired and capped_weights is desired_weights:
            awarded_shares = desired_shares  # the same split (distribute is a function of its inputs)
        else:
            awarded_shares = line_items.distribute(awarded, capped_weights, step)
    delay = plan.delay_days
    promised = delay is not None
    available_at = None if delay is None else lifecycle.available_after_activity(fx, delay)
    # Every lot of one action shares the condition and the event time, hence one expiry for all of them.
    expires_at, expiry_code, rolling = expiry.assign_expiry(fx, plan.expiry)
    lots = []
    code, rule_name = plan.code, plan.key_head[0]
    # Indexed, not `zip(..., strict=True)`: under mypyc a call with a keyword argument to a builtin type is a
    # generic call that parses it (about 2.5k instructions per action). `distribute` gives a share per weight.
    count = len(units)
    if len(desired_shares) != count or len(awarded_shares) != count:
        raise ValueError("a share per unit expected")  # pragma: no cover  (what strict zip checked)
    # The lot key: the scope's prefix, (rule, position, condition), the item (None as "": `derive_id` text);
    # the whole bill's key in one concatenation (`key_bill`), an item's from the head and the item.
    bill_key: tuple[object, ...] | None = None
    head: tuple[object, ...] = plan.key_head
    if count == 1 and units[0].item_id is None:
        bill_key = scope.key_head + plan.key_bill if scope is not None else plan.key_bill
    elif scope is not None:
        head = scope.key_head + head
    uncut = awarded_shares is desired_shares  # each share is what was wanted: no `desired_amount` to compare
    for position in range(count):
        got = awarded_shares[position]
        if count > 1 and got <= ZERO:  # (one unit: its share is `awarded`, positive, checked above)
            continue
        cut_from = None
        if not uncut:
            want = desired_shares[position]
            if want > got:
                cut_from = want
        item_id = units[position].item_id
        lots.append(fx.credit(
            points=got,
            # (one tuple op: a splat builds a list under mypyc)
            key=bill_key if bill_key is not None else head + (item_id or "",),  # noqa: RUF005
            promised=promised,
            available_at=available_at,
            expires_at=expires_at,
            expiry_code=expiry_code,
            rolling=rolling,
            condition_code=code,
            rule=rule_name,
            bill_number=bill_number,
            line_item_id=item_id,
            desired_amount=cut_from,
        ))
    if scope is not None:
        scope.charge_points(fx, awarded, lots)
    return lots
