"""The engine's fast paths give exactly what the plain versions give: ids, exponents, trusted contracts."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from hashlib import blake2b

import pytest

from loyalty_stream.engine.contracts import trusted
from loyalty_stream.engine.ids import derive_id
from loyalty_stream.engine.rounding import exponent_of as _exponent
from loyalty_stream.events.outputs import Channel, LedgerKind, Notification


def reference_id(prefix: str, *parts: object) -> str:
    """derive_id as it was first written: every part converted one by one."""
    raw = "\x1f".join("" if p is None else str(p) for p in parts)
    return prefix + "-" + blake2b(raw.encode(), digest_size=10).hexdigest()


@pytest.mark.parametrize("parts", [
    (),
    ("evt-1",),
    ("evt-1", LedgerKind.EARN, "1", "TransactionAdd", "base", "base earn", "0", "BASE", ""),
    ("evt-1", LedgerKind.EARN, 1, "TransactionAdd", "base", "base earn", 0, "BASE", None),
    ("evt-1", "series", None, Decimal("1.50"), 7),
    ("évènement", "\x1f", ""),
])
def test_derive_id_matches_the_reference(parts: tuple[object, ...]) -> None:
    assert derive_id("le", *parts) == reference_id("le", *parts)


def test_text_and_converted_parts_give_the_same_id() -> None:
    assert derive_id("lot", "e", 0, None) == derive_id("lot", "e", "0", "")


@pytest.mark.parametrize("text", ["0", "0.00", "1", "12.34", "-5.5", "0.001", "1E+2", "1.23456789", "100.0"])
def test_exponent_matches_as_tuple(text: str) -> None:
    value = Decimal(text)
    assert _exponent(value) == value.as_tuple().exponent


def test_trusted_instances_share_a_fields_set_that_copies_do_not_leak_into() -> None:
    def make(template: str) -> Notification:
        return trusted(Notification, {
            "type": "Notification", "notification_id": "nt-1", "customer_id": "c", "program_id": "p",
            "channel": Channel.PUSH, "template": template, "data": {}, "cause_event_id": "e",
            "occurred_at": datetime(2024, 1, 1, tzinfo=UTC),
        })

    first, second = make("a"), make("b")
    assert first.model_fields_set == set(Notification.model_fields)
    assert first.model_fields_set is second.model_fields_set
    copied = first.model_copy(update={"template": "c"})
    assert copied.template == "c" and first.template == "a"
    assert second.model_fields_set == set(Notification.model_fields)
    assert first == Notification.model_construct(**first.__dict__)


def test_text_memo_remembers_by_identity_and_stays_bounded() -> None:
    """`TextMemo` (behind the codec's `iso_text` and `lifecycle.stamp`): the same object gives its remembered text;
    an equal date-time that is another object (another offset, another instant by `fold`) is formatted anew."""
    from datetime import UTC, datetime, timedelta, timezone

    from loyalty_stream.engine.lifecycle import stamp
    from loyalty_stream.engine.times import TextMemo

    memo = TextMemo(limit=3)
    at = datetime(2030, 3, 1, 12, tzinfo=UTC)
    assert memo.get(at) is None and memo.put(at, "A") == "A" and memo.get(at) == "A"
    same_instant = at.astimezone(timezone(timedelta(hours=2)))
    assert same_instant == at and memo.get(same_instant) is None
    for hour in range(3):  # full: cleared, then filled again
        memo.put(datetime(2030, 1, 1, hour, tzinfo=UTC), "x")
    assert memo.get(at) is None
    assert stamp(same_instant) == stamp(at) == "2030-03-01T12:00:00+00:00"
