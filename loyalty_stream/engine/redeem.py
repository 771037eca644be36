"""Redemption: check the redeem condition, debit current points from lots, and always answer the request.

Every PointsRedemption gets exactly one `RedemptionResult` (a POS waits on it): accepted with the lots it
consumed, or rejected with a machine-readable `reason_code` and nothing debited. A rejection is a normal
business outcome, never a dead letter.

Spending takes current lots soonest expiry first (never-expiring last), then oldest. The ledger carries one
REDEEM entry per lot consumed (lot id, that lot's expiry, the redemption id), so a reader of the ledger alone
can keep per-lot remainders and the expiry of a lot never takes points a redemption already took; the
RedemptionResult lists the same consumptions for the caller.

Reversal puts the consumed points back into the very lots they came from, with their original expiry. A lot
whose expiry has passed in the meantime gets its points back and loses them again at once (REVERSE then
EXPIRE, both visible in history): the vendor rule is "expiry restored to the original", and a reversal must
not become a way to extend expired points.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final
from zoneinfo import ZoneInfo

from loyalty_stream.engine import expiry, parking, periods, retention, rules
from loyalty_stream.engine.contracts import trusted
from loyalty_stream.engine.effects import CURRENT, Effects
from loyalty_stream.engine.ids import derive_id
from loyalty_stream.engine.rounding import normalize
from loyalty_stream.engine.state import ZERO, Consumption, CustomerState, Lot, Redemption
from loyalty_stream.events import activities as act
from loyalty_stream.events.outputs import Bucket, ConsumedLot, LedgerKind, RedemptionResult, RedemptionStatus
from loyalty_stream.program.redeem import RedeemCondition
from loyalty_stream.program.rules import RedeemAction, Rule

_REDEEM: Final = LedgerKind.REDEEM  # (Enum members as constants: see `effects.EARN`)

ACTIVITY: Final = "PointsRedemption"
_FAR: Final = datetime.max.replace(tzinfo=UTC)
_WITHHELD: Final = "the goods that earned them were returned"


class Rejection(StrEnum):
    """`RedemptionResult.reason_code` values; checks run in this order and the first failure answers."""

    DUPLICATE_REDEMPTION_ID = "duplicate_redemption_id"
    INVALID_POINTS = "invalid_points"  # the request rounds to zero points
    NO_REDEEM_CONDITION = "no_redeem_condition"  # no rule fired a redeem action, or the tier is not covered
    LIFETIME_POINTS_NOT_MET = "lifetime_points_not_met"
    LIFETIME_PURCHASES_NOT_MET = "lifetime_purchases_not_met"
    BALANCE_REQUIRED_NOT_MET = "balance_required_not_met"
    BELOW_MINIMUM = "below_minimum"
    NOT_A_MULTIPLE = "not_a_multiple"
    OVER_TRANSACTION_LIMIT = "over_transaction_limit"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    DAILY_LIMIT_REACHED = "daily_limit_reached"
    WEEKLY_LIMIT_REACHED = "weekly_limit_reached"
    MONTHLY_LIMIT_REACHED = "monthly_limit_reached"
    PAST_DAYS_LIMIT_REACHED = "past_days_limit_reached"


def _n(value: Decimal) -> str:
    return str(normalize(value))


def last_day(expires_at: datetime, zone: ZoneInfo) -> date:
    """The last local day points are usable: `expires_at` is 00:00 local of the next day (see expiry.py)."""
    return (expires_at - timedelta(microseconds=1)).astimezone(zone).date()


# Which points are spent --------------------------------------------------------------------------------

def spending_order(lot: Lot) -> tuple[bool, datetime, datetime, str]:
    """Soonest expiry first (never-expiring last), then oldest, then id for determinism.

    Aware datetimes compare as instants, so lots stamped in different offsets still order correctly."""
    return (lot.expires_at is None, lot.expires_at or _FAR, lot.earned_at, lot.lot_id)


def plan_spending(state: CustomerState, points: Decimal) -> list[tuple[Lot, Decimal]]:
    """Which current lots give how much for a debit of `points`, without changing them: the caller debits
    lot by lot so each ledger entry carries the balance right after it. Less than asked if the balance is."""
    plan: list[tuple[Lot, Decimal]] = []
    left = points
    for lot in sorted((lot for lot in state.lots if lot.spendable), key=spending_order):
        if left <= ZERO:
            break
        take = min(lot.remaining, left)
        plan.append((lot, take))
        left -= take
    return plan


def spent_by_lot(state: CustomerState) -> dict[str, Decimal]:
    """Points of each lot currently held by redemptions that were not reversed."""
    spent: dict[str, Decimal] = {}
    for redemption in state.redemptions.values():
        if not redemption.reversed:
            for c in redemption.consumed:
                spent[c.lot_id] = spent.get(c.lot_id, ZERO) + c.points
    return spent


# Redeem conditions -------------------------------------------------------------------------------------

def pick_condition(fx: Effects, code: str | None) -> tuple[RedeemCondition | None, str]:
    """The named condition if it covers the customer's tier, else the first one that does; with a reason."""
    tier = fx.state.tier or fx.program.lowest_tier
    if code is not None:
        condition = fx.program.redeem_condition(code)
        if condition.covers(tier):
            return condition, ""
        return None, f"redeem condition {code} does not apply to tier {tier}"
    for condition in fx.program.redeem_conditions:
        if condition.covers(tier):
            return condition, ""
    return None, f"no redeem condition applies to tier {tier}"


def check_condition(fx: Effects, condition: RedeemCondition, points: Decimal) -> tuple[Rejection, str] | None:
    """The first check `points` fails under `condition` now (eligibility, request shape, balance, limits)."""
    c, state, at = condition, fx.state, fx.at
    if c.lifetime_points_required is not None and state.lifetime_earned < c.lifetime_points_required:
        return (Rejection.LIFETIME_POINTS_NOT_MET, f"redeeming needs {_n(c.lifetime_points_required)} "
                f"lifetime points; the customer has earned {_n(state.lifetime_earned)}")
    if c.lifetime_purchases_required is not None and state.lifetime_purchases < c.lifetime_purchases_required:
        return (Rejection.LIFETIME_PURCHASES_NOT_MET, f"redeeming needs lifetime purchases of "
                f"{_n(c.lifetime_purchases_required)}; the customer has {_n(state.lifetime_purchases)}")
    balance = fx.current
    if c.balance_required is not None and balance < c.balance_required:
        return (Rejection.BALANCE_REQUIRED_NOT_MET, f"redeeming needs a balance of at least "
                f"{_n(c.balance_required)}; the balance is {_n(balance)}")
    if c.min_points is not None and points < c.min_points:
        return (Rejection.BELOW_MINIMUM,
                f"at least {_n(c.min_points)} points per redemption; {_n(points)} asked")
    if c.multiples_of is not None and points % c.multiples_of != ZERO:
        return (Rejection.NOT_A_MULTIPLE,
                f"points are redeemed in multiples of {_n(c.multiples_of)}; {_n(points)} is not")
    if c.max_points_per_transaction is not None and points > c.max_points_per_transaction:
        return (Rejection.OVER_TRANSACTION_LIMIT, f"at most {_n(c.max_points_per_transaction)} points per "
                f"redemption; {_n(points)} asked")
    if points > balance:
        return Rejection.INSUFFICIENT_BALANCE, f"the balance {_n(balance)} is less than {_n(points)}"
    zone, limits = fx.program.zone, c.limits
    calendar: Iterable[tuple[Decimal | None, periods.Period, Rejection, str]] = (
        (limits.per_day, "day", Rejection.DAILY_LIMIT_REACHED, "today"),
        (limits.per_calendar_week, "calendar_week", Rejection.WEEKLY_LIMIT_REACHED, "this calendar week"),
        (limits.per_calendar_month, "calendar_month", Rejection.MONTHLY_LIMIT_REACHED, "this calendar month"),
    )
    for limit, period, code, label in calendar:
        if limit is not None:
            used = periods.points_redeemed_in(state, at, period, zone)
            if used + points > limit:
                return code, (f"{_n(used)} points already redeemed {label} of a limit of {_n(limit)}; "
                              f"{_n(points)} more would exceed it")
    past = limits.per_last_days
    if past is not None:
        used = periods.points_redeemed_past_days(state, at, past.days)
        if used + points > past.points:
            return (Rejection.PAST_DAYS_LIMIT_REACHED, f"{_n(used)} points already redeemed in the last "
                    f"{past.days} days of a limit of {_n(past.points)}; {_n(points)} more would exceed it")
    return None


# PointsRedemption --------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Attempt:
    """One request's way through the rule sets: the first redeem action that finds a condition decides."""

    points: Decimal
    redemption_id: str
    decided: bool = False
    accepted: bool = False
    miss: str = ""
    deferred: list[tuple[Any, Rule, int, Any]] = field(default_factory=list)
    """(action, rule, index, the rule set's scope) of the actions waiting for the verdict."""

    def __init__(self, points: Decimal, redemption_id: str, decided: bool = False, accepted: bool = False,
                 miss: str = "", deferred: list[tuple[Any, Rule, int, Any]] | None = None) -> None:
        # Written out: under mypyc an explicit __init__ is compiled, the dataclass-generated one runs interpreted.
        self.points = points
        self.redemption_id = redemption_id
        self.decided = decided
        self.accepted = accepted
        self.miss = miss
        self.deferred = [] if deferred is None else deferred


def handle_redemption(fx: Effects, activity: act.PointsRedemption) -> None:
    payload = activity.payload
    state = fx.state
    redemption_id = payload.redemption_id or activity.event_id
    previous = state.redemptions.get(redemption_id)
    if previous is not None:
        _reject(fx, activity, redemption_id, Rejection.DUPLICATE_REDEMPTION_ID,
                f"redemption id {redemption_id} was already used by event {previous.event_id}")
        return
    points = fx.round(payload.points)
    if points <= ZERO:
        _reject(fx, activity, redemption_id, Rejection.INVALID_POINTS,
                f"{_n(payload.points)} points round to {_n(points)}")
        return
    attempt = _Attempt(points, redemption_id)
    if fx.program.rule_sets_for(ACTIVITY):
        rules.run_rule_sets(fx, ACTIVITY, activity, _handlers(attempt))
    else:
        # A program without PointsRedemption rules still redeems: its first condition covering the tier.
        _attempt(fx, activity, attempt, None, None)
    if not attempt.decided:
        _reject(fx, activity, redemption_id, Rejection.NO_REDEEM_CONDITION,
                attempt.miss or "no PointsRedemption rule allowed this redemption")
        return
    if attempt.accepted:
        _run_deferred(fx, activity, attempt)


def _handlers(attempt: _Attempt) -> dict[str, rules.ActionHandler]:
    """`redeem` decides; the other actions of the firing rules wait for an accepted redemption (a customer
    is not told "redeemed" nor given a coupon for a refused request)."""

    def redeem(fx: Effects, action: RedeemAction, rule: Rule, activity: Any, index: int) -> None:
        _attempt(fx, activity, attempt, action.condition, rule)

    def defer(fx: Effects, action: Any, rule: Rule, activity: Any, index: int) -> None:
        attempt.deferred.append((action, rule, index, fx.scope))

    return {"redeem": redeem, "notify": defer, "issue_coupon": defer, "upgrade_tier": defer}


def _run_deferred(fx: Effects, activity: act.PointsRedemption, attempt: _Attempt) -> None:
    """Run them as the rule set would have (its scope gives their output ids); notifications also carry
    what was redeemed, unless the action's own data says otherwise."""
    result = fx.outcome.redemption_result
    outer = fx.scope
    try:
        for action, rule, index, scope in attempt.deferred:
            fx.scope = scope
            if action.type == "notify" and result is not None:
                data = {"points": _n(result.points_debited), "currency_value": _n(result.currency_value),
                        "redemption_id": result.redemption_id, "balance": _n(result.balance_after),
                        **action.data}
                action = action.model_copy(update={"data": data})
            rules.COMMON_HANDLERS[action.type](fx, action, rule, activity, index)
    finally:
        fx.scope = outer


def _attempt(fx: Effects, activity: act.PointsRedemption, attempt: _Attempt, code: str | None,
             rule: Rule | None) -> None:
    if attempt.decided:
        return  # one request, one redemption: later rule sets do not redeem again
    condition, miss = pick_condition(fx, code)
    if condition is None:
        attempt.miss = miss
        return
    attempt.decided = True
    failure = check_condition(fx, condition, attempt.points)
    if failure is not None:
        _reject(fx, activity, attempt.redemption_id, failure[0], failure[1])
        return
    _debit(fx, activity, attempt, condition, rule)
    attempt.accepted = True


def _debit(fx: Effects, activity: act.PointsRedemption, attempt: _Attempt, condition: RedeemCondition,
           rule: Rule | None) -> None:
    state, points, redemption_id = fx.state, attempt.points, attempt.redemption_id
    bill_number = activity.payload.bill_number
    consumed: list[Consumption] = []
    for lot, take in plan_spending(state, points):
        fx.take(lot, take)
        consumed.append(Consumption(lot.lot_id, take))
        fx.entry(kind=_REDEEM, bucket=CURRENT, amount=-take, key=(redemption_id, lot.lot_id),
                 lot=lot, redemption_id=redemption_id, bill_number=bill_number, line_item_id=None,
                 condition_code=condition.code, rule=None if rule is None else rule.name)
    state.redeemed += points
    state.redemptions[redemption_id] = Redemption(
        redemption_id=redemption_id, event_id=activity.event_id, at=activity.event_time, points=points,
        bill_number=bill_number, consumed=consumed,
    )
    value = points * fx.program.point_value
    _answer(fx, activity, redemption_id, RedemptionStatus.ACCEPTED, points, value, consumed, None,
            f"redeemed {_n(points)} points worth {_n(value)} under {condition.code}")


def _reject(fx: Effects, activity: act.PointsRedemption, redemption_id: str, reason: Rejection,
            message: str) -> None:
    _answer(fx, activity, redemption_id, RedemptionStatus.REJECTED, ZERO, ZERO, [], reason.value, message)


def _answer(fx: Effects, activity: act.PointsRedemption, redemption_id: str, status: RedemptionStatus,
            debited: Decimal, value: Decimal, consumed: list[Consumption], reason: str | None,
            message: str) -> None:
    lots = {lot.lot_id: lot for lot in fx.state.lots} if consumed else {}
    fx.outcome.redemption_result = trusted(RedemptionResult, {
        "type": "RedemptionResult",
        "result_id": derive_id("rr", activity.event_id),
        "request_event_id": activity.event_id,
        "customer_id": fx.state.customer_id,
        "program_id": fx.state.program_id,
        "status": status,
        "reason_code": reason,
        "message": message,
        "points_requested": activity.payload.points,
        "points_debited": debited,
        "currency_value": value,
        "redemption_id": redemption_id,
        "bill_number": activity.payload.bill_number,
        "lots": [trusted(ConsumedLot, {"lot_id": c.lot_id, "points": c.points,
                                       "expires_at": lots[c.lot_id].expires_at}) for c in consumed],
        "balance_after": fx.current,
        "occurred_at": activity.event_time,
    })


# Giving redeemed points back ---------------------------------------------------------------------------

def handle_reversal(fx: Effects, activity: act.RedemptionReversal) -> None:
    """Reverse a redemption by id. An unknown id waits for its redemption, which may still be on its way on
    another topic (`engine.parking`); a bill that contradicts the redemption's is invalid input (dead-lettered
    with the reason); a redemption already given back is left alone (idempotent)."""
    payload = activity.payload
    redemption = fx.state.redemptions.get(payload.redemption_id)
    if redemption is None:
        parking.park(fx)
        return
    if (payload.bill_number is not None and redemption.bill_number is not None
            and payload.bill_number != redemption.bill_number):
        fx.outcome.rejected = (f"redemption {redemption.redemption_id!r} was made on bill "
                               f"{redemption.bill_number!r}, not {payload.bill_number!r}")
        return
    if redemption.reversed:
        return
    late = retention.reversal_rejection(fx, redemption)
    if late is not None:
        fx.outcome.rejected = late
        return
    reverse(fx, redemption, f"redemption {redemption.redemption_id} reversed")


def _release_shortfall(fx: Effects, redemption: Redemption) -> dict[str, Decimal]:
    """Per consumed lot, the points a return already claimed after they were spent by this redemption.

    Giving them back would hand the customer points for goods that came back: under `take_available` they
    are withheld (the forgiven shortfall is recovered instead), under `allow_negative` they come back and pay
    the debt they created. Either way the lot no longer owes them."""
    spent = spent_by_lot(fx.state)
    excess: dict[str, Decimal] = {}
    for c in redemption.consumed:
        lot = fx.state.lot(c.lot_id)
        if lot is None or lot.shortfall <= ZERO:
            continue
        still_spent = spent.get(c.lot_id, ZERO) - c.points
        spent[c.lot_id] = still_spent
        over = min(c.points, max(ZERO, lot.shortfall - still_spent))
        if over > ZERO:
            lot.shortfall -= over
            excess[c.lot_id] = excess.get(c.lot_id, ZERO) + over
    if fx.program.return_policy.shortfall != "take_available":
        return {}
    return excess


def reverse(fx: Effects, redemption: Redemption, reason: str) -> None:
    """Put each consumption back into its lot with the lot's original expiry (see the module docstring)."""
    give_back(fx, redemption, reason, reissue=False)


def reissue(fx: Effects, redemption: Redemption, reason: str, own_lots: Collection[str] = ()) -> None:
    """Give the redeemed points back as one new lot with the return policy's expiry (not the original).

    Points taken from `own_lots` (the lots of the bill being returned) go back into those lots instead, so the
    claw-back that follows takes them: reissuing them would hand out points of goods that came back."""
    give_back(fx, redemption, reason, reissue=True, own_lots=own_lots)


def give_back(fx: Effects, redemption: Redemption, reason: str, *, reissue: bool,
              own_lots: Collection[str] = ()) -> None:
    state, rid = fx.state, redemption.redemption_id
    withheld = _release_shortfall(fx, redemption)
    reissued = held_back = ZERO
    for c in redemption.consumed:
        held = min(withheld.get(c.lot_id, ZERO), c.points)
        withheld[c.lot_id] = withheld.get(c.lot_id, ZERO) - held
        lot = state.lot(c.lot_id)
        if reissue and c.lot_id not in own_lots:
            reissued += c.points - held
            held_back += held
        elif lot is None:  # lots are never dropped; defensive, so a reversal can never lose points
            expires_at, code, rolling = expiry.assign_expiry(fx, None)
            fx.credit(points=c.points - held, key=("reverse", rid, c.lot_id), expires_at=expires_at,
                      expiry_code=code, rolling=rolling, origin="reverse", kind=LedgerKind.REVERSE,
                      counts_as_earned=False, redemption_id=rid,
                      reason=f"{reason}; lot {c.lot_id} is gone, points restored as a new lot")
        else:
            _restore(fx, redemption, lot, c.points, held, reason)
    redemption.reversed = True
    state.redeemed -= redemption.points
    if held_back > ZERO:
        reason = f"{reason}; {_n(held_back)} withheld: {_WITHHELD}"
    if reissued > ZERO:
        expires_at, code, rolling = expiry.assign_expiry(fx, fx.program.return_policy.reissue_expiry)
        fx.credit(points=reissued, key=("reissue", rid), expires_at=expires_at, expiry_code=code,
                  rolling=rolling, origin="reissue", kind=LedgerKind.REISSUE, counts_as_earned=False,
                  bill_number=redemption.bill_number, redemption_id=rid, reason=reason)


def _restore(fx: Effects, redemption: Redemption, lot: Lot, points: Decimal, held: Decimal,
             reason: str) -> None:
    rid = redemption.redemption_id
    restored = points - held
    fx.give(lot, restored)
    fx.settle_debt(lot)
    note = reason if held == ZERO else f"{reason}; {_n(held)} withheld: {_WITHHELD}"
    fx.entry(kind=LedgerKind.REVERSE, bucket=Bucket.CURRENT, amount=restored, key=(rid, lot.lot_id),
             lot=lot, redemption_id=rid, bill_number=redemption.bill_number, line_item_id=None,
             desired_amount=points if held else None, reason=note)
    # Expired already: by this event's time, or by a later event's (this one is late and the lot has been
    # expired in processing order; waiting for the next event would expire it a second time).
    seen = fx.state.last_event_time
    expired_by = fx.at if seen is None or seen < fx.at else seen
    if lot.expires_at is not None and lot.expires_at <= expired_by and lot.remaining > ZERO:
        gone = fx.empty(lot)
        fx.state.expired += gone
        fx.entry(kind=LedgerKind.EXPIRE, bucket=Bucket.CURRENT, amount=-gone,
                 key=(lot.lot_id, "reversed", rid), lot=lot, redemption_id=rid, line_item_id=None,
                 bill_number=redemption.bill_number,
                 reason=f"its original expiry ({last_day(lot.expires_at, fx.program.zone).isoformat()}) "
                        f"had passed when redemption {rid} was reversed")
