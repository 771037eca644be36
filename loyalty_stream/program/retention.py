"""Retention: how long a customer's history is kept, so that a customer's state stays bounded.

A purchase is kept (the bill with its line items, and the lots it earned even once they hold no points) for
`return_window_days`: that is how long a return of it is accepted. A redemption is kept for
`reversal_window_days`: that is how long it can be reversed. After that the engine drops them from the
customer's state (and drops lots that hold no points once no kept bill or redemption refers to them), and a
return or reversal that comes later is rejected with the reason (dead-lettered, like any other invalid input).

Windows are counted back from the newest activity the customer has had (its event time), not from the
activity at hand: a late return cannot reach a bill that a newer activity may already have dropped, so the
outcome never depends on when the dropping happened.

Redemptions are kept longer than their reversal window while the program still reads them: redemption limits
(per day, calendar week or month, the last N days) and rule conditions on `customer.points_redeemed_*`
(`redemption_lookback_days`). A condition whose number of days is not a literal keeps them forever.

Absent windows keep everything forever, which is what a program without a `retention` section does (the state
of a long-lived customer then grows without bound).

`parking_window_hours` is about order, not history: Kafka orders a customer's records only within one topic, so
a return, unlock or reversal can arrive before the purchase or redemption it refers to. Such an activity waits
in the customer's state ("parked", see `engine.parking`) until its reference arrives, and is given up
(dead-lettered as an unresolved reference) once the customer's purchases (redemptions) have moved more than
this many hours of event time past it: within their own topic they arrive in order, so the one awaited is then
not coming. 0 turns parking off (an unknown reference is dead-lettered at once).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING

from pydantic import Field

from loyalty_stream.program.common import ProgramPart
from loyalty_stream.program.expressions import Call, Literal, Name, Node, parse

if TYPE_CHECKING:
    from loyalty_stream.program.model import Program


class Retention(ProgramPart):
    return_window_days: int | None = Field(
        default=None, ge=1, le=36600,
        description="Days after a purchase that a return of it is accepted; the bill and the lots it earned are "
        "kept that long. Absent: forever.",
    )
    reversal_window_days: int | None = Field(
        default=None, ge=1, le=36600,
        description="Days after a redemption that it can be reversed; it is kept that long (longer while "
        "redemption limits or rule conditions still count it). Absent: forever.",
    )
    parking_window_hours: int = Field(
        default=24, ge=0, le=8784,
        description="How long (event time) a return, unlock or reversal that arrives before its purchase or "
        "redemption waits for it: it is given up (dead-lettered) once the customer's purchases (redemptions) "
        "are this many hours past it. 0: never wait.",
    )


_PERIOD_NAMES = {
    "customer.points_redeemed_today": 1,
    "currentCustomer.pointsRedeemedToday": 1,
    "customer.points_redeemed_in_calendar_week": 7,
    "currentCustomer.pointsRedeemedInCalendarWeek": 7,
    "customer.points_redeemed_in_calendar_month": 31,
    "currentCustomer.pointsRedeemedInCalendarMonth": 31,
}
_PAST_DAYS = frozenset({"customer.points_redeemed_in_past_days", "currentCustomer.pointsRedeemedInPastDays"})
_UNBOUNDED = -1


def _nodes(node: Node) -> Iterator[Node]:
    yield node
    for child in ("operand", "left", "right", "function"):
        value = getattr(node, child, None)
        if isinstance(value, Node):
            yield from _nodes(value)
    for many in ("items", "args"):
        for value in getattr(node, many, ()):
            yield from _nodes(value)


def _condition_days(text: str) -> int:
    """Days of redemptions a condition reads (0: none; _UNBOUNDED: not a literal number of days)."""
    days = 0
    try:
        tree = parse(text)
    except ValueError:
        return 0  # never compiled: the program would not have loaded
    for node in _nodes(tree):
        if isinstance(node, Name):
            days = max(days, _PERIOD_NAMES.get(node.dotted, 0))
        elif isinstance(node, Call) and node.function.dotted in _PAST_DAYS:
            argument = node.args[0] if node.args else None
            if not isinstance(argument, Literal) or not isinstance(argument.value, Decimal):
                return _UNBOUNDED
            days = max(days, int(argument.value.to_integral_value(rounding=ROUND_CEILING)))
    return days


def redemption_lookback_days(program: Program) -> int | None:
    """How many days back the program reads a customer's redemptions (limits, rule conditions); None when a
    condition's look-back is not a literal (redemptions must then be kept forever). Includes a day of slack
    for calendar periods that start at local midnight."""
    days = 0
    for condition in program.redeem_conditions:
        limits = condition.limits
        if limits.per_day is not None:
            days = max(days, 1)
        if limits.per_calendar_week is not None:
            days = max(days, 7)
        if limits.per_calendar_month is not None:
            days = max(days, 31)
        if limits.per_last_days is not None:
            days = max(days, limits.per_last_days.days)
    for sets in program.rule_sets.values():
        for rule_set in sets:
            for rule in rule_set.rules:
                read = _condition_days(rule.when)
                if read == _UNBOUNDED:
                    return None
                days = max(days, read)
    return days + 1 if days else 0
