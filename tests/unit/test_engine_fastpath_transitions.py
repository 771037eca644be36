"""`lifecycle`'s fast paths of the due transitions' outputs give exactly what the plain code gave: the synthetic
activities' fields copied from a template per kind (`_synthetic`), their payloads remembered per due time, and a
reminder's points written by `str` where that is `format(points, "f")` (`_plain`)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from loyalty_stream.engine import lifecycle
from loyalty_stream.engine.state import new_state
from loyalty_stream.events import activities as act
from loyalty_stream.events.codec import encode


def test_plain_is_the_f_format() -> None:
    """Every spelling a Decimal can have: exponents either side of `str`'s switch to scientific notation, zeros
    and negative zeros with exponents, special values."""
    values = [Decimal(text) for text in ("0", "-0", "0.00", "-0.00", "0E-7", "0E+2", "1E+2", "1E-6", "1E-7",
                                         "0.000001", "0.0000001", "123.4500", "-5.5", "12345678901234567890.123",
                                         "NaN", "-Infinity", "Infinity", "sNaN", "1.000000E+3")]
    rng = random.Random(7)
    for _ in range(20000):
        digits = rng.randint(-10 ** rng.randint(0, 30), 10 ** rng.randint(0, 30))
        values.append(Decimal(digits).scaleb(rng.randint(-40, 10)))
    for value in values:
        assert lifecycle._plain(value) == f"{value:f}", value


def test_synthetic_activities_are_the_validated_models_and_keep_their_own_fields() -> None:
    """Each activity gets its own fields (a copy of the template per kind, which stays as it was), equal to the
    validated `due_activity` and encoded alike, in any zone and for both kinds."""
    templates = {kind: dict(fields) for kind, fields in (("DelayedAccrual", lifecycle._ACCRUAL_FIELDS),
                                                         ("PointsExpiry", lifecycle._EXPIRY_FIELDS))}
    built = []
    for zone in (UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-7))):
        for n, kind in enumerate(("DelayedAccrual", "PointsExpiry", "DelayedAccrual", "PointsExpiry")):
            state = new_state(f"c{n}", f"p{n % 2}")
            at = datetime(2026, 1, 1 + n, tzinfo=zone)
            fast = lifecycle._synthetic(state, at, kind, f"e{n}")  # type: ignore[arg-type]
            plain = lifecycle.due_activity(state.program_id, state.customer_id, at, kind, f"e{n}")  # type: ignore[arg-type]
            assert type(fast) is type(plain) and fast == plain and encode(fast) == encode(plain)
            assert fast.model_fields_set == set(type(fast).model_fields)  # (`trusted`: every field given)
            assert list(fast.__dict__) == list(plain.__dict__)
            built.append((fast, state, at, kind, f"e{n}"))
    for fast, state, at, kind, event_id in built:  # later builds did not touch earlier activities
        assert (fast.event_id, fast.customer_id, fast.program_id, fast.event_time) == (
            event_id, state.customer_id, state.program_id, at)
        assert isinstance(fast, act.DelayedAccrual if kind == "DelayedAccrual" else act.PointsExpiry)
        assert isinstance(fast, act.DelayedAccrual | act.PointsExpiry)
        assert fast.type == kind and fast.payload.due_at is at
    assert templates == {"DelayedAccrual": lifecycle._ACCRUAL_FIELDS, "PointsExpiry": lifecycle._EXPIRY_FIELDS}
