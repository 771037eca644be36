"""Balance distribution: bucket edges in, half-open buckets out, and how Redis counts one.

Edges `e0 < e1 < ... < en` give `n + 2` buckets: below `e0` (negative balances, with edge 0), `[e_i, e_i+1)`,
and `en` and above, so every customer lands in exactly one bucket whatever the edges.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from itertools import pairwise

from loyalty_stream.engine.rounding import normalize

DEFAULT_EDGES: tuple[Decimal, ...] = tuple(Decimal(n) for n in (0, 100, 500, 1000, 5000, 10000))
MAX_EDGES = 100


@dataclass(frozen=True, slots=True)
class Bucket:
    lower: Decimal | None
    """Inclusive; None is minus infinity."""
    upper: Decimal | None
    """Exclusive; None is plus infinity."""

    def contains(self, value: Decimal) -> bool:
        return (self.lower is None or value >= self.lower) and (self.upper is None or value < self.upper)

    @property
    def label(self) -> str:
        if self.lower is None:
            return f"< {normalize(self.upper)}" if self.upper is not None else "all"
        if self.upper is None:
            return f">= {normalize(self.lower)}"
        return f"[{normalize(self.lower)}, {normalize(self.upper)})"


def parse_edges(text: str) -> list[Decimal]:
    """`"0,100,500"` -> edges; ValueError with a readable reason for anything else."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("give at least one edge, e.g. 0,100,500")
    if len(parts) > MAX_EDGES:
        raise ValueError(f"at most {MAX_EDGES} edges")
    try:
        edges = [Decimal(p) for p in parts]
    except InvalidOperation:
        raise ValueError(f"edges must be numbers, got {text!r}") from None
    if not all(e.is_finite() for e in edges):
        raise ValueError("edges must be finite numbers")
    if any(b <= a for a, b in pairwise(edges)):
        raise ValueError("edges must be strictly increasing")
    return edges


def buckets_between(edges: Sequence[Decimal]) -> list[Bucket]:
    bounds: list[Decimal | None] = [None, *edges, None]
    return [Bucket(lo, hi) for lo, hi in pairwise(bounds)]


def count(balances: Iterable[Decimal], edges: Sequence[Decimal]) -> list[int]:
    """Customers per bucket, in memory: the reference the Redis counts are tested against."""
    buckets = buckets_between(edges)
    counts = [0] * len(buckets)
    for value in balances:
        counts[next(i for i, b in enumerate(buckets) if b.contains(value))] += 1
    return counts


def redis_range(bucket: Bucket) -> tuple[str, str]:
    """ZCOUNT min/max of a bucket (the upper edge exclusive). Scores are the balances as floats: the same
    conversion on both sides keeps a balance equal to an edge in the upper bucket."""
    low = "-inf" if bucket.lower is None else repr(float(bucket.lower))
    high = "+inf" if bucket.upper is None else f"({float(bucket.upper)!r}"
    return low, high
