"""Retention: returns and reversals past the program's windows, and dropping what no one can use any more.

The rule is the program's (`program/retention.py`): a bill is kept for `return_window_days` after the purchase,
a redemption for `reversal_window_days` (longer while limits or conditions count it), and a lot that holds no
points is kept while a kept bill earned it or a kept redemption consumed it. Windows count back from the
customer's newest event time (`newest`), the same instant for the check and for the dropping, so a return or
reversal past its window is rejected whether or not its bill or redemption has been dropped yet.

What was dropped is not recorded (that record would grow without bound): a return or reversal of something
dropped looks like one whose purchase or redemption has not arrived yet: it waits (`engine.parking`) and is given
up by parking's rules, at the latest once the customer's activity is past the same window.

Dropping runs at most once per local day of the customer's newest event (the first activity that moves it to
a new day), and only removes what no later activity can read: balances, due transitions and outputs are the
same as if everything had been kept, except that a late return or reversal is refused.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.expiry import local_date
from loyalty_stream.engine.state import (
    ZERO,
    Bill,
    CustomerState,
    Lot,
    Redemption,
    StoredRows,
    iso_text,
    parse_stored_time,
)


def newest(state: CustomerState, at: datetime) -> datetime:
    """The customer's newest event time once the activity at `at` is counted."""
    last = state.last_event_time
    return at if last is None or at > last else last


def return_rejection(fx: Effects, bill: Bill) -> str | None:
    """Why a return of `bill` is refused now (past the return window), or None."""
    window = fx.known.return_window
    if window is None:
        return None
    if bill.event_time + window > newest(fx.state, fx.activity.event_time):
        return None
    days = fx.program.retention.return_window_days
    bought = local_date(bill.event_time, fx.known.zone).isoformat()
    return (f"bill {bill.bill_number!r} was bought on {bought}, more than {days} days before the customer's "
            f"latest activity: past the return window, its points are no longer returned")


def reversal_rejection(fx: Effects, redemption: Redemption) -> str | None:
    """Why reversing `redemption` is refused now (past the reversal window), or None."""
    days = fx.program.retention.reversal_window_days
    if days is None or redemption.at + timedelta(days=days) > newest(fx.state, fx.activity.event_time):
        return None
    return (f"redemption {redemption.redemption_id!r} was made more than {days} days before the customer's latest "
            f"activity: past the reversal window, it can no longer be reversed")


# Dropping -------------------------------------------------------------------------------------------------
def due(fx: Effects) -> bool:
    """Drop now? Once the program has a window, on the first activity of each new local day (newest time)."""
    known = fx.known
    if known.return_window is None and known.redemption_keep is None:
        return False
    last = fx.state.last_event_time
    at = fx.time
    if last is None or at <= last:
        return False
    if at - last >= _SURELY_ANOTHER_DAY:
        return True  # (no zone conversion: most customers' activities are days apart)
    return fx.local_date() != local_date(last, known.zone)


_SURELY_ANOTHER_DAY: Final = timedelta(hours=24 + 48)
"""Two instants this far apart fall on different local days in any zone: a UTC offset is less than 24 hours
either way (Python's bound on any tzinfo), so their local wall times are more than 24 hours apart."""


def time_of(row_or_item: Any, index: int, attribute: str) -> datetime:
    """The time at `index` of a stored row, or `attribute` of a decoded bill or redemption. A row's text is read
    through the codec's memo of stored date-times, whose values carry the engine's shared zones: they compare
    with each other and with the engine's times without asking both for their offsets (`engine.times`)."""
    if type(row_or_item) is list:
        return parse_stored_time(row_or_item[index])
    value: datetime = getattr(row_or_item, attribute)
    return value


class _Horizon:
    """A window's horizon, tested against stored rows' date-time texts mostly without parsing them: most rows
    are tested before anything parsed their text, and a parse costs several times the whole test (an eighth of
    `prune`, with the comparison of the new zone it gives: see `engine.times`).

    The codec writes `isoformat`'s texts: `YYYY-MM-DDTHH:MM:SS[.ffffff]` then the UTC offset, each offset written
    one way. Two such texts with the same offset sort as their instants (that offset's wall times in fixed-width
    digits; an absent fraction is zero, and the offset's `+`/`-` sorts before `.`), so a text of that shape
    ending in the horizon's own offset is compared as text. Any other (another offset, another spelling) is
    parsed: texts of different offsets do not sort as their instants."""

    __slots__ = ("at", "offset", "text")

    def __init__(self, at: datetime) -> None:
        self.at = at
        self.text: str | None = None
        """`at.isoformat()` (by the codec's `iso_text`, in a fraction of the time), made on first use."""
        self.offset = ""

    def reached(self, row_or_item: Any, index: int, attribute: str) -> bool:
        """`time_of(row_or_item, index, attribute) <= self.at`."""
        if type(row_or_item) is not list:
            at: datetime = getattr(row_or_item, attribute)
            return at <= self.at
        text: str = row_or_item[index]
        iso = self.text
        if iso is None:
            iso = self.text = iso_text(self.at)
            self.offset = iso[26:] if self.at.microsecond else iso[19:]
        offset = self.offset
        size = len(text) - len(offset)
        if (
            (size == 19 or (size == 26 and text[19] == "."))
            and text.endswith(offset) and text[10] == "T"
            and text[4] == "-" and text[7] == "-" and text[13] == ":" and text[16] == ":"
        ):
            return text <= iso
        return parse_stored_time(text) <= self.at


def raw(items: Any) -> dict[str, Any]:
    """Entries as stored rows or decoded objects, without decoding anything."""
    if isinstance(items, StoredRows):
        return items.peek_all()
    result: dict[str, Any] = items
    return result


def prune(fx: Effects, now: datetime) -> None:
    """Drop the bills, redemptions and empty lots past the program's windows at `now`, the customer's newest
    event time (see the module)."""
    state = fx.state
    known = fx.known
    bills = raw(state.bills)
    kept_bills: dict[str, str] = {}  # bill number -> the purchase's event id
    if known.return_window is not None:
        horizon = _Horizon(now - known.return_window)
        past: list[str] = []  # (deleted after the loop: no copy of the items to iterate, few are past)
        for number, bill in bills.items():
            if horizon.reached(bill, 1, "event_time"):
                past.append(number)
            else:
                kept_bills[number] = bill[0] if type(bill) is list else bill.event_id
        for number in past:
            del state.bills[number]
    else:
        kept_bills = {number: bill[0] if type(bill) is list else bill.event_id for number, bill in bills.items()}
    lots = state.lots
    empty = [lot for lot in lots if lot.remaining <= ZERO]
    redemptions = raw(state.redemptions)
    if not empty and not redemptions:
        return  # no lot to drop and no redemption to look at (about half the time): skip the lot scans
    # A lot is needed while a kept bill earned it (`_bill_lot`) or a kept redemption consumed it. The set of
    # every bill lot is built only for a redemption past its window whose bill is gone (it is kept if it spent
    # a kept bill's lot); empty lots are tested one by one.
    bill_lots: set[str] | None = None
    consumed_kept: set[str] = set()
    keep = known.redemption_keep
    horizon_r = None if keep is None else _Horizon(now - keep)
    for rid, item in list(redemptions.items()):
        if type(item) is list:
            bill_number, consumed = item[3], [c[0] for c in item[4]]
        else:
            bill_number, consumed = item.bill_number, [c.lot_id for c in item.consumed]
        if horizon_r is not None and horizon_r.reached(item, 1, "at") and bill_number not in kept_bills:
            if bill_lots is None:
                bill_lots = {lot.lot_id for lot in lots if _bill_lot(lot, kept_bills)}
            if not any(lot_id in bill_lots for lot_id in consumed):
                del state.redemptions[rid]
                continue
        consumed_kept.update(consumed)
    dropped = [lot for lot in empty if lot.lot_id not in consumed_kept and not _bill_lot(lot, kept_bills)]
    if dropped:
        fx.forget(dropped)
        gone = {id(lot) for lot in dropped}  # (lots are distinct objects; their ids need not be distinct)
        state.lots = [lot for lot in lots if id(lot) not in gone]


def _bill_lot(lot: Lot, kept_bills: dict[str, str]) -> bool:
    """Was the lot earned by a purchase whose bill is kept (by that very purchase, not an earlier one of the
    same number)?"""
    return (lot.origin == "earn" and lot.bill_number is not None
            and kept_bills.get(lot.bill_number) == lot.source_event_id)
