"""Customer-facing history: one human line per ledger entry, from the entry alone.

Pure and total: it reads nothing but the entry (and an optional display zone), so the read model, the API and
a replay render the same words for the same entry, and every kind the engine writes has a sentence. The
entry's own `reason` carries what only the producer knew (why a return could not take everything, that an
adjustment was clamped), so nothing here second-guesses the engine.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal

from loyalty_stream.engine.rounding import normalize
from loyalty_stream.events.outputs import Bucket, LedgerEntry, LedgerKind


def _points(amount: Decimal, noun: str = "point") -> str:
    value = normalize(abs(amount))
    sign = "" if amount == 0 else ("+" if amount > 0 else "-")
    return f"{sign}{value} {noun}{'' if value == 1 else 's'}"


def _day(at: datetime, zone: tzinfo | None) -> date:
    return (at.astimezone(zone) if zone is not None else at).date()


def _usable_through(expires_at: datetime, zone: tzinfo | None) -> str:
    """`expires_at` is the instant points are gone (00:00 of the next day), so show the day before it."""
    return _day(expires_at - timedelta(microseconds=1), zone).isoformat()


def _origin(entry: LedgerEntry, preposition: str = "on") -> str:
    if entry.bill_number is None:
        return ""
    item = f" item {entry.line_item_id}" if entry.line_item_id else ""
    return f" {preposition} bill {entry.bill_number}{item}"


def _codes(entry: LedgerEntry) -> str:
    parts = [p for p in (entry.condition_code, f"rule '{entry.rule}'" if entry.rule else None) if p]
    return f" ({', '.join(parts)})" if parts else ""


def _sentence(entry: LedgerEntry, zone: tzinfo | None) -> str:
    kind, amount = entry.kind, entry.amount
    reason = f": {entry.reason}" if entry.reason else ""
    expiry = f", usable through {_usable_through(entry.expires_at, zone)}" if entry.expires_at else ""
    if kind is LedgerKind.EARN:
        where = _origin(entry) or f" for {entry.source_type}"
        return f"{_points(amount)} earned{where}{_codes(entry)}{expiry}"
    if kind is LedgerKind.PROMISE:
        available = (f", available from {_day(entry.available_at, zone).isoformat()}"
                     if entry.available_at else "")
        return f"{_points(amount)} promised{_origin(entry)}{_codes(entry)}{available}"
    if kind is LedgerKind.CONVERT:
        why = f" ({entry.reason})" if entry.reason else ""
        return f"{_points(amount, 'promised point')} became available{_origin(entry, 'from')}{why}{expiry}"
    if kind is LedgerKind.EXPIRE:
        earned = f" (earned{_origin(entry)})" if entry.bill_number and not entry.redemption_id else ""
        return f"{_points(amount)} expired{earned}{reason}"
    if kind is LedgerKind.REDEEM:
        bill = f" on bill {entry.bill_number}" if entry.bill_number else ""
        code = f", condition {entry.condition_code}" if entry.condition_code else ""
        source = (f" from points usable through {_usable_through(entry.expires_at, zone)}"
                  if entry.expires_at else "")
        return f"{_points(amount)} redeemed (redemption {entry.redemption_id}{bill}{code}){source}"
    if kind is LedgerKind.REVERSE:
        kept = f", original expiry {_usable_through(entry.expires_at, zone)} kept" if entry.expires_at else ""
        return f"{_points(amount)} given back{reason or f': redemption {entry.redemption_id} reversed'}{kept}"
    if kind is LedgerKind.RETURN:
        if entry.bucket is Bucket.PROMISED:
            return f"{_points(amount, 'promised point')} cancelled{reason}"
        return f"{_points(amount)} taken back{reason}"
    if kind is LedgerKind.REISSUE:
        return f"{_points(amount)} reissued for redemption {entry.redemption_id}{reason}{expiry}"
    if kind is LedgerKind.ADJUST:
        verb = "added" if amount > 0 else ("deducted" if amount < 0 else "not deducted")
        by = f" by operator {entry.operator_id}" if entry.operator_id else ""
        return f"{_points(amount)} {verb}{by}{reason}{expiry if amount > 0 else ''}"
    if kind is LedgerKind.REDATE:  # moves no points: says which lot's date moved, and why
        why = f" ({entry.reason})" if entry.reason else ""
        now = (f"now usable through {_usable_through(entry.expires_at, zone)}" if entry.expires_at
               else "no longer expire")
        return f"expiry moved{why}: points{_origin(entry, 'from')}{_codes(entry)} {now}"
    return f"{_points(amount)} {kind.value}{reason}"  # pragma: no cover - every kind is handled above


def describe(entry: LedgerEntry, zone: tzinfo | None = None, *, audit: bool = False) -> str:
    """`2024-03-05  +25 points earned on bill B1 (BASE_PCT, rule 'base earn'); balance 125`.

    Dates are shown in `zone` (the program's) or in the entry's own offset. `audit` appends what operations
    need to trace the line back: source event and type, program version, entry id."""
    balance = (f"promised balance {normalize(entry.promised_after)}" if entry.bucket is Bucket.PROMISED
               else f"balance {normalize(entry.balance_after)}")
    line = f"{_day(entry.occurred_at, zone).isoformat()}  {_sentence(entry, zone)}; {balance}"
    if audit:
        line += (f" [event {entry.source_event_id} ({entry.source_type}), program v{entry.program_version}, "
                 f"entry {entry.entry_id}]")
    return line
