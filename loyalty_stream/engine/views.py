"""What a customer sees: balances, upcoming expiration groups, promised points. Pure reads of the state.

The stored state is only materialised up to the customer's last activity, so the `at` variants read lots as
they stand at `at`: a lot due to convert by then counts as current, one due to expire by then is gone. (Debt
is not re-settled in that projection; the next activity or scheduler event does it for real.)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from loyalty_stream.engine.expiry import expiry_date
from loyalty_stream.engine.state import ZERO, CustomerState, Lot
from loyalty_stream.program.model import Program


@dataclass(frozen=True, slots=True)
class Balances:
    current: Decimal
    """Redeemable now (net of debt)."""
    promised: Decimal
    """Delayed accrual, not redeemable yet."""
    lifetime_earned: Decimal
    redeemed: Decimal
    expired: Decimal
    returned: Decimal
    debt: Decimal


def _alive(lot: Lot, at: datetime | None) -> bool:
    return lot.remaining > ZERO and (at is None or lot.expires_at is None or lot.expires_at > at)


def _promised(lot: Lot, at: datetime | None) -> bool:
    return lot.promised and (at is None or lot.available_at is None or lot.available_at > at)


def balances(state: CustomerState, at: datetime | None = None) -> Balances:
    """The balance summary; with `at`, current/promised/expired as they stand at that time."""
    alive = [lot for lot in state.lots if _alive(lot, at)]
    promised = sum((lot.remaining for lot in alive if _promised(lot, at)), ZERO)
    current = sum((lot.remaining for lot in alive if not _promised(lot, at)), ZERO) - state.debt
    lapsed = sum((lot.remaining for lot in state.lots if lot.remaining > ZERO and not _alive(lot, at)), ZERO)
    return Balances(
        current=current, promised=promised, lifetime_earned=state.lifetime_earned, redeemed=state.redeemed,
        expired=state.expired + lapsed, returned=state.returned, debt=state.debt,
    )


def upcoming_expirations(state: CustomerState, program: Program, at: datetime) -> list[tuple[date, Decimal]]:
    """Points still held at `at` that will expire, grouped by their last usable local day, soonest first.

    Promised points are included (they expire on the same clock); never-expiring points are not.
    """
    groups: dict[date, Decimal] = defaultdict(lambda: ZERO)
    for lot in state.lots:
        if lot.expires_at is not None and _alive(lot, at):
            groups[expiry_date(lot.expires_at, program.zone)] += lot.remaining
    return sorted(groups.items())


def promised_points(state: CustomerState, at: datetime | None = None
                    ) -> list[tuple[datetime, Decimal, str | None]]:
    """Promised (delayed) points by (available at, bill), in the order they become current."""
    groups: dict[tuple[datetime, str | None], Decimal] = defaultdict(lambda: ZERO)
    for lot in state.lots:
        if lot.available_at is not None and _alive(lot, at) and _promised(lot, at):
            groups[(lot.available_at, lot.bill_number)] += lot.remaining
    return sorted(((when, points, bill) for (when, bill), points in groups.items()),
                  key=lambda row: (row[0], row[2] or ""))
