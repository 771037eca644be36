"""Deterministic output ids: derived from what caused the output, never random, never the clock."""

from __future__ import annotations

from hashlib import blake2b


def derive_id(prefix: str, *parts: object) -> str:
    """`prefix-` + 20 hex chars of a hash over the parts; the same inputs always give the same id."""
    raw = "\x1f".join("" if p is None else str(p) for p in parts).encode()
    return f"{prefix}-{blake2b(raw, digest_size=10).hexdigest()}"
