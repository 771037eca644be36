"""The engine's fast paths for ids and ledger entries give exactly what the plain computations give: ids
hashed from text joined in pieces (`ids.joined`, `ids.id_of_text`, `effects._entry_id`) and the entries' source
fields copied from the previous entry (`effects._Written`) rather than set per entry."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from hashlib import blake2b
from typing import Any

import pytest

from loyalty_stream.engine.effects import Effects, _entry_id
from loyalty_stream.engine.ids import derive_id_of, id_of_text, joined
from loyalty_stream.engine.state import ZERO, new_state
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.events.outputs import Bucket, LedgerEntry, LedgerKind, SourceRef
from loyalty_stream.program.model import Program
from tests.unit.conftest import activity


def reference_id(prefix: str, *parts: object) -> str:
    """derive_id as it was first written: every part converted one by one."""
    raw = "\x1f".join("" if p is None else str(p) for p in parts)
    return prefix + "-" + blake2b(raw.encode(), digest_size=10).hexdigest()


PARTS: list[tuple[object, ...]] = [
    (),
    ("",),
    ("evt-1",),
    ("evt-1", LedgerKind.EARN, "1", "TransactionAdd", "base", "base earn", "0", "BASE", ""),
    ("evt-1", LedgerKind.EARN, 1, "TransactionAdd", "base", None, Decimal("1.50")),
    ("évènement", "\x1f", "", "x" * 200),  # (more than one hash block)
]


@pytest.mark.parametrize("parts", PARTS)
def test_ids_from_joined_text_match_the_reference(parts: tuple[object, ...]) -> None:
    expected = reference_id("lot", *parts)
    assert derive_id_of("lot", parts) == expected
    assert id_of_text("lot-", joined(parts)) == expected


@pytest.mark.parametrize("key", PARTS)
def test_entry_id_from_the_joined_key_matches_the_key_splatted(key: tuple[object, ...]) -> None:
    text = joined(key) if key else None
    assert _entry_id("evt-9", LedgerKind.EXPIRE, "3", text) == reference_id("le", "evt-9", LedgerKind.EXPIRE, "3",
                                                                             *key)


def _check(entry: LedgerEntry, fx: Effects, cause: str, key: tuple[object, ...], source_type: str,
           source: SourceRef | None, occurred_at: datetime) -> None:
    """The entry's id and source fields are the plain ones, and its fields are in declaration order."""
    assert entry.entry_id == reference_id("le", cause, entry.kind, str(fx.program.version), *key)
    found: dict[str, Any] = {"source_event_id": entry.source_event_id, "source_type": entry.source_type,
                             "source": entry.source, "occurred_at": entry.occurred_at}
    assert found == {"source_event_id": cause, "source_type": source_type, "source": source,
                     "occurred_at": occurred_at}
    assert list(entry.__dict__) == list(LedgerEntry.model_fields)
    assert entry == LedgerEntry.model_construct(**entry.__dict__)


def test_entries_take_their_source_fields_from_the_activity_they_are_made_for(default_program: Program) -> None:
    first: Envelope = activity("Engagement", "e1", "2024-05-01T10:00:00+02:00", event_name="page_view")
    other: Envelope = activity("Registration", "e2", "2024-05-02T11:00:00+00:00")
    read_at, elsewhere = SourceRef(topic="t", partition=0, offset=7), SourceRef(topic="t", partition=1, offset=3)
    fx = Effects(new_state("c1", default_program.id), first, default_program, read_at)

    # The first entry (a credit's) makes the base; the lot's id and the entry's are the plain ones.
    lot = fx.credit(points=Decimal("5"), key=("event", "page_view"))
    assert lot.lot_id == reference_id("lot", "e1", "event", "page_view")
    _check(fx.outcome.ledger[-1], fx, "e1", ("event", "page_view"), "Engagement", read_at, first.event_time)
    fx.credit(points=Decimal("1.5"), key=(), promised=True)
    _check(fx.outcome.ledger[-1], fx, "e1", (), "Engagement", read_at, first.event_time)

    # On behalf of another activity, then back.
    before = fx.act_for(other)
    fx.entry(kind=LedgerKind.ADJUST, bucket=Bucket.CURRENT, amount=ZERO, key=("adjust",))
    _check(fx.outcome.ledger[-1], fx, "e2", ("adjust",), "Registration", read_at, other.event_time)
    fx.restore(before)
    fx.entry(kind=LedgerKind.ADJUST, bucket=Bucket.CURRENT, amount=ZERO, key=("adjust", 1, None))
    _check(fx.outcome.ledger[-1], fx, "e1", ("adjust", 1, None), "Engagement", read_at, first.event_time)

    # Read at another source (`parking.acting`), then back.
    fx.source = elsewhere
    fx.entry(kind=LedgerKind.ADJUST, bucket=Bucket.CURRENT, amount=ZERO, key=())
    _check(fx.outcome.ledger[-1], fx, "e1", (), "Engagement", elsewhere, first.event_time)
    fx.source = read_at

    # A given time; a scheduled entry (no source, the lot's cause, its own type and time).
    at = datetime(2024, 6, 1, tzinfo=UTC)
    fx.entry(kind=LedgerKind.ADJUST, bucket=Bucket.CURRENT, amount=ZERO, key=("at",), at=at)
    _check(fx.outcome.ledger[-1], fx, "e1", ("at",), "Engagement", read_at, at)
    fx.entry(kind=LedgerKind.EXPIRE, bucket=Bucket.CURRENT, amount=ZERO, key=(lot.lot_id,), at=at, scheduled=True,
             lot=lot, source_type="PointsExpiry")
    _check(fx.outcome.ledger[-1], fx, "e1", (lot.lot_id,), "PointsExpiry", None, at)
    fx.entry(kind=LedgerKind.ADJUST, bucket=Bucket.CURRENT, amount=ZERO, key=("after",))
    _check(fx.outcome.ledger[-1], fx, "e1", ("after",), "Engagement", read_at, first.event_time)
    assert [entry.seq for entry in fx.outcome.ledger] == list(range(1, 9))
