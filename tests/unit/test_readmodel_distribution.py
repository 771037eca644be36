"""Distribution buckets, the ZCOUNT ranges Redis answers them with, the key layout and record decoding."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loyalty_stream.events.outputs import Notification
from loyalty_stream.readmodel.distribution import Bucket, buckets_between, count, parse_edges, redis_range
from loyalty_stream.readmodel.keys import Keys
from loyalty_stream.readmodel.projection import BadRecord, decode

balances = st.decimals(min_value=-1000, max_value=100_000, places=2, allow_nan=False, allow_infinity=False)


def zcount(scores: list[float], low: str, high: str) -> int:
    """What Redis' ZCOUNT does with the range strings (`(` makes a bound exclusive)."""
    def bound(text: str) -> tuple[float, bool]:
        return (float(text[1:]), True) if text.startswith("(") else (float(text), False)

    (lo, lo_open), (hi, hi_open) = bound(low), bound(high)
    return sum(1 for s in scores if (s > lo if lo_open else s >= lo) and (s < hi if hi_open else s <= hi))


@given(st.lists(balances, max_size=50), st.lists(balances, min_size=1, max_size=8, unique=True))
def test_every_balance_lands_in_exactly_one_bucket_and_redis_counts_agree(values: list[Decimal],
                                                                          edges: list[Decimal]) -> None:
    edges = sorted(edges)
    counts = count(values, edges)
    assert sum(counts) == len(values)
    scores = [float(v) for v in values]
    assert [zcount(scores, *redis_range(b)) for b in buckets_between(edges)] == counts


def test_edges_on_a_bucket_boundary_go_up() -> None:
    edges = parse_edges("0, 100, 500")
    assert count([Decimal(-1), Decimal(0), Decimal("99.99"), Decimal(100), Decimal(500)], edges) == [1, 2, 1, 1]
    assert [b.label for b in buckets_between(edges)] == ["< 0", "[0, 100)", "[100, 500)", ">= 500"]
    assert Bucket(Decimal(0), Decimal(100)).contains(Decimal(0)) and not Bucket(None, Decimal(0)).contains(Decimal(0))


@pytest.mark.parametrize("text, problem", [("", "at least one"), ("5,1", "strictly increasing"), ("1,1", "strictly"),
                                           ("a,2", "numbers"), ("1,inf", "finite")])
def test_bad_edges_say_why(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_edges(text)


def test_keys_cannot_collide_and_stay_under_the_prefixes() -> None:
    keys = Keys.for_prefixes("loyalty:", "t-1-")
    assert keys.customer("a:b", "c").bal != keys.customer("a", "b:c").bal
    assert keys.customer("p", "c").bal == "loyalty:t-1-rm:c:p:c:bal"
    assert all(k.startswith(keys.base) for k in (*keys.customer("p", "c").all(), keys.offsets, keys.programs,
                                                 keys.distribution("p"), keys.idempotency("k")))
    assert Keys.for_prefixes("a*b:", "").pattern == "a\\*b:rm:*"


def test_records_from_a_newer_producer_still_decode_and_garbage_is_named() -> None:
    record = (b'{"type": "Notification", "notification_id": "n1", "customer_id": "c", "program_id": "p", '
              b'"channel": "email", "template": "t", "cause_event_id": "e", "occurred_at": "2026-01-01T00:00:00Z", '
              b'"added_later": 1}')
    assert decode(Notification, record).notification_id == "n1"
    for raw, problem in ((b"{nope", "not JSON"), (b'{"type": "Notification"}', "not a Notification"),
                         (None, "empty")):
        with pytest.raises(BadRecord, match=problem):
            decode(Notification, raw)
