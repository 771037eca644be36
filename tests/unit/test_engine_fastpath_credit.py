"""The fast paths of `Effects.__init__` and `Effects.credit` give what the plain computations give: the opening
walk over the lots skips lots holding the shared ZERO and date-times that are the earliest so far, and the ids of
lots and entries are hashed after a hasher over their shared head (`ids.hasher_of`, `ids.id_after`)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, localcontext
from hashlib import blake2b

import pytest

from loyalty_stream.engine.effects import Effects
from loyalty_stream.engine.ids import hasher_of, id_after, id_of_text
from loyalty_stream.engine.state import ZERO, Lot, new_state
from loyalty_stream.events.envelope import Envelope
from loyalty_stream.events.outputs import Bucket, LedgerKind
from loyalty_stream.program.model import Program
from tests.unit.conftest import activity

D = Decimal
T0 = datetime(2024, 5, 1, tzinfo=UTC)
REMAINING = ["ZERO", "0", "0.00", "-0", "-0.0", "1", "2.50", "-1.5", "0.125", "7"]


def reference_id(prefix: str, *parts: object) -> str:
    raw = "\x1f".join("" if p is None else str(p) for p in parts)
    return prefix + "-" + blake2b(raw.encode(), digest_size=10).hexdigest()


def _lots(rng: random.Random) -> list[Lot]:
    times = [T0 + timedelta(days=n) for n in range(4)]  # (few objects, each shared by several lots)
    lots = []
    for n in range(rng.randrange(12)):
        text = rng.choice(REMAINING)
        remaining = ZERO if text == "ZERO" else D(text)
        lots.append(Lot(f"lot-{n}", D("9"), remaining, rng.random() < 0.4, T0, rng.choice([None, *times]),
                        rng.choice([None, *times]), "src", rolling=rng.random() < 0.1))
    return lots


def _earliest(times: list[datetime | None]) -> datetime | None:
    known = [at for at in times if at is not None]
    return min(known) if known else None


@pytest.mark.parametrize("floor", [False, True])
@pytest.mark.parametrize("seed", range(30))
def test_the_opening_walk_gives_the_plain_sums_and_earliest_times(default_program: Program, seed: int,
                                                                   floor: bool) -> None:
    """Emptied lots (the shared ZERO) are skipped; zeros of other scales or signs still count (to the scale), and
    under any rounding (ROUND_FLOOR makes -0 sums) the totals read as the plain sums over every lot do."""
    rng = random.Random(seed)
    state = new_state("c1", default_program.id)
    state.lots = lots = _lots(rng)
    with localcontext() as context:
        if floor:
            context.rounding = ROUND_FLOOR
        fx = Effects(state, activity("Engagement", "e1", "2024-05-01T10:00:00+00:00", event_name="x"),
                     default_program, None)
        held, held_promised = ZERO, ZERO
        for lot in lots:  # (the plain sums: every lot, the ZERO ones too)
            if lot.promised:
                held_promised += lot.remaining
            else:
                held += lot.remaining
    assert (str(fx.held), str(fx.held_promised)) == (str(held), str(held_promised))
    assert fx.first_expiry == _earliest([lot.expires_at for lot in lots if lot.remaining > ZERO])
    assert fx.first_available == _earliest([lot.available_at for lot in lots
                                            if lot.promised and lot.remaining > ZERO])
    assert fx.any_rolling == any(lot.rolling for lot in lots)


def test_a_zero_lot_of_another_scale_still_sets_the_scale(default_program: Program) -> None:
    """What the skip must not take for the shared ZERO: an equal zero is another term (here its exponent)."""
    state = new_state("c1", default_program.id)
    state.lots = [Lot("a", D("1"), D("1"), False, T0, None, None, "s"),
                  Lot("b", D("1"), D("0.00"), False, T0, None, None, "s"),
                  Lot("c", D("1"), ZERO, False, T0, None, T0, "s")]
    fx = Effects(state, activity("Engagement", "e1", "2024-05-01T10:00:00+00:00", event_name="x"), default_program,
                 None)
    assert str(fx.held) == "1.00"
    assert fx.first_expiry is None  # (the ZERO lot holds nothing to expire)


@pytest.mark.parametrize("raw", ["", "e", "évènement\x1f", "x" * 127, "x" * 128, "x" * 129, "y" * 300])
@pytest.mark.parametrize("tail", ["", "k", "base\x1f1\x1fL1", "z" * 200])
def test_an_id_hashed_after_a_head_is_the_id_of_the_whole_text(raw: str, tail: str) -> None:
    hasher = hasher_of(raw)
    expected = id_of_text("le-", raw + tail)
    assert expected == "le-" + blake2b((raw + tail).encode(), digest_size=10).hexdigest()
    assert id_after("le-", hasher, tail.encode()) == expected
    assert id_after("le-", hasher, tail.encode()) == expected  # (the head's hasher is left as it was)
    assert id_after("lot-", hasher, b"") == id_of_text("lot-", raw)


@pytest.mark.parametrize("seed", range(12))
def test_credits_and_entries_have_the_plain_ids(default_program: Program, seed: int) -> None:
    """Credits and entries of several kinds interleaved, some on behalf of another activity, some scheduled, keys
    empty or not (non-text parts too): every lot id and entry id is the one hashed from its whole text."""
    rng = random.Random(seed)
    first: Envelope = activity("Engagement", "e1", "2024-05-01T10:00:00+02:00", event_name="page_view")
    other: Envelope = activity("Registration", "e2", "2024-05-02T11:00:00+00:00")
    fx = Effects(new_state("c1", default_program.id), first, default_program, None)
    version = str(default_program.version)
    kinds = [LedgerKind.EARN, LedgerKind.PROMISE, LedgerKind.ADJUST, LedgerKind.REDEEM]
    checked = 0
    for n in range(50):
        before = fx.act_for(other) if rng.random() < 0.2 else None
        key: tuple[object, ...] = rng.choice([(), (f"k{n}",), (f"k{n}", 1, None), ("k", D("1.50"))])
        cause = fx.event_id
        if rng.random() < 0.6:
            promised = rng.random() < 0.5
            kind = rng.choice([None, *kinds])
            lot = fx.credit(points=D(rng.choice(["1", "2.5"])), key=key, promised=promised, kind=kind)
            entry = fx.outcome.ledger[-1]
            assert lot.lot_id == reference_id("lot", cause, *key)
            kind = kind or (LedgerKind.PROMISE if promised else LedgerKind.EARN)
        else:
            kind = rng.choice(kinds)
            scheduled = bool(fx.state.lots) and rng.random() < 0.3
            lot_of = rng.choice(fx.state.lots) if scheduled else None
            entry = fx.entry(kind=kind, bucket=Bucket.CURRENT, amount=ZERO, key=key, lot=lot_of, scheduled=scheduled)
            if lot_of is not None:
                cause = lot_of.source_event_id
        assert entry.entry_id == reference_id("le", cause, kind, version, *key)
        checked += 1
        if before is not None:
            fx.restore(before)
    assert checked == 50
