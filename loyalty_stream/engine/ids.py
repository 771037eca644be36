"""Deterministic output ids: derived from what caused the output, never random, never the clock."""

from __future__ import annotations

from hashlib import blake2b


def derive_id(prefix: str, *parts: object) -> str:
    """`prefix-` + 20 hex chars of a hash over the parts; the same inputs always give the same id.

    Parts are joined as text with a unit separator (None as the empty string)."""
    raw = "\x1f".join([p if p.__class__ is str else ("" if p is None else str(p)) for p in parts])
    return prefix + "-" + blake2b(raw.encode(), digest_size=10).hexdigest()
